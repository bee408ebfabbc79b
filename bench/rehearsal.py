"""Real-size rehearsal: one pair through every stage of the real pipeline on a real architecture with random
weights (no download, no GPU needed), with the smallest counts that still run each code path.

A throwaway study (tests/studykit.make_study) gets a preset `rehearsal` with `source: build:<arch>` (the
published SD 1.5 / SD 2.1-base configs in src/dreamsolo/models/configs) at the model's own resolution,
and each stage runs as DVC runs it, `python stages/<name>.py --pair P`, in its own process (cold):
base (the seeded build), prepare, generate_priors (2 images per class), train_scene (LoRA on the UNet and
the text encoder, bf16 autocast, gradient checkpointing), train_instance (full fine-tuning from Stage I, text
encoder frozen, bf16 autocast, gradient checkpointing, scene replay), sample and sample_base (1 image
per prompt), evaluate (open_clip ViT-B-32 and DINO ViT-S/16 at their 224 px input, random weights,
LPIPS alex) and report. Per stage: wall time, peak RSS (wait4), parameters, trainable parameters and
AdamW state; then the UNet's activation memory is measured (bench/_sizes.py) and the GPU memory of a
training step predicted for fp32 / bf16 / 8-bit Adam / gradient checkpointing at batch 1 and 4.

    python bench/rehearsal.py --model sd15 --md bench/out/rehearsal-sd15.md
    python bench/rehearsal.py --model tiny                # the test's run: the tiny build, minutes
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "bench"), str(REPO / "tests"), str(REPO / "src")]
import _sizes  # noqa: E402

PY = sys.executable
PAIR = "cat_grass"
GiB = 2**30
REAL_EVAL = {"clip_model": "ViT-B-32", "clip_pretrained": "random",
             "dino_model": "vit_small_patch16_224.dino", "dino_pretrained": "rehearsal/dino-random.safetensors"}
TINY_EVAL = {"clip_model": "tiny-clip", "clip_pretrained": "random",
             "dino_model": "vit_small_patch16_224.dino", "dino_pretrained": "random"}
# Stage I: LoRA, text encoder on, bf16 autocast; Stage II: full, text encoder off, fp32 (bf16 autocast would add
# a cached bf16 copy of the trained UNet, 1.6 GiB past this box's budget for SD), scene replay; both checkpointing
STAGE_I = {"method": "lora", "train_text_encoder": True, "gradient_checkpointing": True, "mixed_precision": "bf16"}
STAGE_II = {"method": "full", "train_text_encoder": False, "gradient_checkpointing": True,
            "mixed_precision": "fp32", "replay_weight": 0.5}


def study_edits(model: str, steps: int, stage2: str = "full") -> dict:
    from dreamsolo.models.build import arch_config

    arch = "tiny" if model == "tiny" else model
    res = arch_config(arch)["resolution"]
    preset = {"source": "build" if arch == "tiny" else f"build:{arch}", "revision": None, "resolution": res,
              "seed": 0, "train_steps": None, "sample_steps": None, "config": None, "train_scene": {},
              "train_instance": {}, "evaluate": TINY_EVAL if arch.startswith("tiny") else REAL_EVAL}
    return {
        "model.preset": "rehearsal", "presets.rehearsal": preset, "prepare.min_size": min(res, 64),
        "priors.num_images": 2, "priors.steps": 2, "priors.batch_size": 2,
        "train.log_every": 1, "train.warmup_steps": 0, "train.checkpoint_every": 1000,
        "train_scene.defaults.steps": steps, "train_instance.defaults.steps": steps,
        f"pairs.{PAIR}.train_scene": STAGE_I, f"pairs.{PAIR}.train_instance": {**STAGE_II, "method": stage2},
        "sample.num_images": 1, "sample.steps": 2, "sample.batch_size": 4,
        "prompts.recontext": ["a photo of {instance} in {scene} at night"],
    }


def random_dino(path: Path) -> None:
    """DINO ViT-S/16 with seeded random weights as a local weights file: loaded by timm at its real 224 px
    input (`random` would build it at 64 px, the library's shortcut for offline runs); its metadata says
    random init, so the report calls it random."""
    import timm
    import torch
    from safetensors.torch import save_file

    from dreamsolo.metrics.dino import RANDOM_INIT

    torch.manual_seed(0)
    model = timm.create_model("vit_small_patch16_224.dino", pretrained=False, num_classes=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path, metadata=RANDOM_INIT)


def stage_commands(study) -> list[tuple[str, list[str]]]:
    p = study.pair(PAIR)
    cmds = [("base", ["stages/base.py"]), ("prepare", ["stages/prepare.py", "--pair", PAIR])]
    for c in dict.fromkeys((p.scene_class, p.instance_class)):
        cmds.append((f"generate_priors ({c})", ["stages/generate_priors.py", "--class", c]))
    for name in ("train_scene", "train_instance", "sample", "sample_base", "evaluate"):
        cmds.append((name, [f"stages/{name}.py", "--pair", PAIR]))
    return cmds + [("report", ["stages/report.py"])]


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_stage(cmd: list[str], root: Path, log: Path, max_rss: float, timeout: float) -> dict:
    """One stage process: wall time and peak RSS (wait4); killed (whole group) past max_rss or timeout."""
    from studykit import env

    e = env(root) | {"DREAMSOLO_WARM": "0", "TQDM_MININTERVAL": "5"}
    t0 = time.perf_counter()
    with open(log, "wb") as err:
        proc = subprocess.Popen([PY, *cmd], cwd=root, env=e, stdout=err, stderr=err, start_new_session=True)
        killed, done = None, (0, 0, None)
        while True:
            done = os.wait4(proc.pid, os.WNOHANG)  # wait4, not poll(): the rusage is the peak RSS
            if done[0]:
                break
            if _rss(proc.pid) > max_rss:
                killed = f"resident set past the --max-rss-gb limit ({max_rss / GiB:.1f} GiB)"
            elif time.perf_counter() - t0 > timeout:
                killed = f"no exit after {timeout:.0f} s"
            if killed:
                os.killpg(proc.pid, signal.SIGKILL)
                done = os.wait4(proc.pid, 0)
                break
            time.sleep(0.2)
        _, status, usage = done
        proc.returncode = os.waitstatus_to_exitcode(status)  # so Popen does not wait again
    rc = os.waitstatus_to_exitcode(status)
    out = {"seconds": time.perf_counter() - t0, "peak_rss": usage.ru_maxrss * 1024, "rc": rc}
    if killed or rc:
        out["error"] = killed or log.read_text(errors="replace").strip().splitlines()[-1][:400]
    return out


def stage_sizes(study, arch: str, name: str) -> dict:
    if name in ("train_scene", "train_instance"):
        return _sizes.counts(arch, study.train(PAIR, name))
    if name in ("prepare", "report") or name.startswith("evaluate"):
        return {}
    return _sizes.counts(arch)


PROBES = {"fp32": ("fp32", False), "bf16": ("bf16", False), "bf16+ckpt": ("bf16", True)}  # PREDICT's columns


def activation_points(model_dir: Path, work: Path, two_rows: bool, max_rss: float,
                      probes: tuple[str, ...] | list[str] = tuple(PROBES)) -> list[dict]:
    """One fresh process per point, under the same resident-set watchdog as the stages. A point past the
    watchdog's limit is a result (that setting does not fit this box), not a failure: the others still run."""
    points = []
    for precision, ckpt in (PROBES[name] for name in probes):
        for rows in ((1, 2) if two_rows else (1,)):
            cmd = [str(REPO / "bench/_sizes.py"), "probe", "--model-dir", str(model_dir),
                   "--rows", str(rows), "--precision", precision] + (["--checkpointing"] if ckpt else [])
            log = work / f"probe-{precision}-{ckpt}-{rows}.log"
            r = run_stage(cmd, work, log, max_rss, 3600)
            if str(r.get("error", "")).startswith("resident set"):
                points.append({"rows": rows, "precision": precision, "checkpointing": ckpt, "did_not_fit": True,
                               "peak_rss": r["peak_rss"], "limit": max_rss, "forward_s": None, "bytes": None})
                print(f"rehearsal: probe {points[-1]}", file=sys.stderr, flush=True)
                continue
            if r.get("error"):
                raise RuntimeError(f"probe {precision} rows={rows} checkpointing={ckpt}: {r['error']}")
            lines = [x for x in log.read_text().splitlines() if x.startswith("{")]
            points.append(json.loads(lines[-1]) | {"peak_rss": r["peak_rss"]})
            print(f"rehearsal: probe {points[-1]}", file=sys.stderr, flush=True)
    return points


def gb(x: float | None) -> str:
    return "" if x is None else f"{x / GiB:.2f}"


def millions(x: int | None) -> str:
    return "" if x is None else f"{x / 1e6:,.2f} M"


def stage_table(rows: list[dict]) -> str:
    head = ("| stage | wall s | peak RSS GiB | parameters | trainable | AdamW state GiB | result |\n"
            "| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
    body = "".join(
        f"| {r['stage']} | {r['seconds']:.1f} | {gb(r['peak_rss'])} | {millions(r['sizes'].get('total'))} | "
        f"{millions(r['sizes'].get('trainable'))} | {gb(r['sizes'].get('optimizer_bytes'))} | "
        f"{'ok' if not r.get('error') else 'FAILED: ' + r['error'].replace('|', '/')} |\n" for r in rows)
    return head + body


PREDICT = [  # (column, autocast dtype of the frozen parts, optimizer, (probe precision, checkpointing))
    ("fp32", 4, "adamw", ("fp32", False)),
    ("bf16", 2, "adamw", ("bf16", False)),
    ("bf16 + 8-bit Adam", 2, "adamw8bit", ("bf16", False)),
    ("bf16 + checkpointing", 2, "adamw", ("bf16", True)),
    ("bf16 + ckpt + 8-bit Adam", 2, "adamw8bit", ("bf16", True)),
]


def act(fit: tuple[float, float], cfg) -> tuple[float, float]:
    """LoRA: autocast caches no copy of the frozen UNet (only tensors that require grad are cached)."""
    return fit if cfg.method == "full" else (0.0, fit[1])


def predict_table(study, arch: str, fits: dict) -> str:
    out = ["| training setting | batch | " + " | ".join(c[0] for c in PREDICT) + " |",
           "| --- | ---: |" + " ---: |" * len(PREDICT)]
    settings = [(s, study.train(PAIR, s)) for s in ("train_scene", "train_instance")]
    if settings[1][1].method != "full":  # Stage II fell back to LoRA: predict the full setting all the same
        settings.append(("train_instance", dataclasses.replace(settings[1][1], method="full")))
    for stage, cfg in settings:
        sizes = _sizes.counts(arch, cfg)
        groups = 3 if stage == "train_instance" and cfg.replay_weight > 0 else 2
        what = (f"{stage}: {cfg.method}, text encoder {'on' if cfg.train_text_encoder else 'off'}, "
                f"{groups} rows per example")
        for batch in (1, 4):  # n/a: that setting's probe did not fit this box or was not run (--probes)
            cells = [gb(_sizes.predict(sizes, low, opt, act(fits[key], cfg), batch * groups)) if key in fits
                     else "n/a" for _, low, opt, key in PREDICT]
            out.append(f"| {what} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(out) + "\n"


def probe_table(points: list[dict]) -> str:
    out = ["| UNet forward with gradients | rows | activation memory GiB (RSS growth) | forward s |",
           "| --- | ---: | ---: | ---: |"]
    for p in points:
        got = (f"did not fit (killed past {gb(p['limit'])} GiB RSS)" if p.get("did_not_fit") else gb(p["bytes"]))
        out.append(f"| {p['precision']}{' + checkpointing' if p['checkpointing'] else ''} | {p['rows']} | "
                   f"{got} | {p['forward_s'] if p['forward_s'] is not None else ''} |")
    return "\n".join(out) + "\n"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["sd15", "sd21-base", "sdxl", "tiny", "tiny-sdxl"], default="sd15")
    p.add_argument("--steps", type=int, default=2, help="optimizer steps per training stage")
    p.add_argument("--work", type=Path, help="study folder (kept); default: a temp dir, removed")
    p.add_argument("--max-rss-gb", type=float, default=16.0, help="a stage past this resident set is killed")
    p.add_argument("--timeout", type=float, default=3600, help="seconds per stage")
    p.add_argument("--from", dest="start", help="with --work: skip the stages before this one (outputs kept)")
    p.add_argument("--skip", action="append", default=[], help="a stage not to run (e.g. sample_base)")
    p.add_argument("--stage2", choices=["full", "lora"], default="full",
                   help="Stage II's method (lora: where full fine-tuning is known not to fit)")
    p.add_argument("--two-rows", action="store_true", help="probe 1 and 2 rows per setting and fit a line")
    p.add_argument("--no-probe", action="store_true", help="skip the activation probe and the prediction")
    p.add_argument("--probes", default=",".join(PROBES),
                   help=f"comma-separated probe settings among {', '.join(PROBES)} (default: all)")
    p.add_argument("--md", type=Path, help="write the tables here too")
    p.add_argument("--json", type=Path, help="write the measurements here")
    p.add_argument("--jsonl", action="store_true", help="end with one JSON line per run (bench/gpu_check.sh)")
    a = p.parse_args(argv)
    a.probes = [x.strip() for x in a.probes.split(",") if x.strip()]
    unknown = [x for x in a.probes if x not in PROBES]
    if unknown:
        p.error(f"--probes: unknown setting {unknown[0]!r} (known: {', '.join(PROBES)})")
    return a


def main(argv=None) -> int:
    a = parse(argv)
    from dreamsolo.config import load_study
    from studykit import make_study

    arch = a.model
    work = a.work or Path(tempfile.mkdtemp(prefix="dreamsolo-rehearsal-"))
    root = work / "study"
    la = os.getloadavg()
    result: dict = {"model": arch, "loadavg_start": la, "stages": [], "steps": a.steps}
    try:
        if not (root / "params.yaml").is_file():
            make_study(root, [PAIR], study_edits(arch, a.steps, a.stage2), git=True)
            if not arch.startswith("tiny"):  # tiny, tiny-sdxl: random evaluators at 64 px
                random_dino(root / REAL_EVAL["dino_pretrained"])
        study = load_study(root)
        cmds = stage_commands(study)
        records = work / "stages.jsonl"  # every stage's row, so a run resumed with --from reports them all
        if a.start:
            first = [n.split()[0] for n, _ in cmds].index(a.start)
            done = {n.split()[0] for n, _ in cmds[:first]}
            old = [json.loads(x) for x in records.read_text().splitlines()] if records.is_file() else []
            result["stages"] = [r for r in old if r["stage"].split()[0] in done]
            cmds = cmds[first:]
        records.write_text("".join(json.dumps(r, default=str) + "\n" for r in result["stages"]))
        cmds = [(n, c) for n, c in cmds if n.split()[0] not in a.skip]
        for name, cmd in cmds:
            r = run_stage(cmd, root, work / f"{name.split()[0]}.log", a.max_rss_gb * GiB, a.timeout)
            r |= {"stage": name, "sizes": stage_sizes(study, arch, name.split()[0])}
            result["stages"].append(r)
            with records.open("a") as f:
                f.write(json.dumps(r, default=str) + "\n")
            print(f"rehearsal {arch}: {name} {r['seconds']:.1f} s, peak RSS {gb(r['peak_rss'])} GiB"
                  f"{', FAILED: ' + r['error'] if r.get('error') else ''}", file=sys.stderr, flush=True)
            if name == "train_instance" and str(r.get("error", "")).startswith("resident set"):
                # full fine-tuning does not fit this box: say so, and go on with LoRA so the rest still runs
                from studykit import edit_params

                r["stage"], r["did_not_fit"] = "train_instance (full: did not fit)", True
                edit_params(root, {f"pairs.{PAIR}.train_instance": {**STAGE_II, "method": "lora"}})
                study = load_study(root)
                again = run_stage(cmd, root, work / "train_instance-lora.log", a.max_rss_gb * GiB, a.timeout)
                again |= {"stage": "train_instance (LoRA instead)", "sizes": stage_sizes(study, arch, name)}
                result["stages"].append(again)
                with records.open("a") as f:
                    f.write(json.dumps(again, default=str) + "\n")
                r = again
            if r.get("error") and not r.get("did_not_fit"):
                log = (work / f"{name.split()[0]}.log").read_text(errors="replace")
                print(log[-4000:], file=sys.stderr, flush=True)
                break
        md = [f"### {arch} (random weights, {study.preset.resolution} px, {a.steps} steps per stage; "
              f"load {la[0]:.1f} at start)\n", stage_table(result["stages"])]
        failed = any(r.get("error") and not r.get("did_not_fit") for r in result["stages"])
        if not a.no_probe and not failed:
            points = activation_points(root / "models/base/rehearsal", work, a.two_rows, a.max_rss_gb * GiB,
                                       a.probes)
            fits = _sizes.fit([p for p in points if not p.get("did_not_fit")], _sizes.counts(arch)["unet"])
            result["activation_points"] = points
            md += ["\n", probe_table(points), "\nPredicted GPU memory of one training step, GiB (unmeasured: "
                   "formula in bench/_sizes.py)\n\n", predict_table(study, arch, fits)]
        text = "".join(md)
        print(text, flush=True)
        if a.md:
            a.md.parent.mkdir(parents=True, exist_ok=True)
            a.md.write_text(text)
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
        if a.jsonl:
            stages = [{"stage": r["stage"], "seconds": round(r["seconds"], 1),
                       "peak_rss_gb": round(r["peak_rss"] / GiB, 2), **({"error": r["error"]} if r.get("error") else {})}
                      for r in result["stages"]]
            print(json.dumps({"bench": "rehearsal", "model": arch, "failed": failed, "stages": stages}), flush=True)
        return 1 if failed else 0
    finally:
        if a.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
