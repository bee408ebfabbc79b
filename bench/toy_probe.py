"""Quick probe of a pretrained `toy` model: VAE fidelity, class images, identifier binding.

    python bench/toy_probe.py --model models/base/toy --out /tmp/toy_probe [--steps 30,100 --lrs 1e-4,3e-4]

1. VAE PSNR on the 16 study photos (prepared as the `prepare` stage does: center crop, 64 px),
   against bicubic down-up baselines of the same photos.
2. A grid of the study's 11 class prompts x 4 seeds: <out>/toy_classes.png.
3. Binding: DreamBooth via the project's own `train_stage` on data/pairs/cat_grass/instance.jpg
   with `a photo of sks cat` (priors: the base model's `a photo of a cat`), then pixel MSE / PSNR
   of `sks cat` and `a cat` samples (fine-tuned and base) to the instance photo.
Everything runs on one thread; results go to <out>/probe.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

CLASSES = ["cat", "cup of coffee", "grass field", "brick wall", "person", "horse", "rocket", "gift box",
           "lunar surface", "gravel path", "night sky"]
GUIDANCE, SAMPLE_STEPS, RES = 7.5, 20, 64  # params.yaml's sample.guidance_scale / steps, preset resolution


def study_photos() -> dict[str, Image.Image]:
    from dreamsolo.images import load_image, prepare_image

    out = {}
    for f in sorted((ROOT / "data/pairs").glob("*/*.*")):
        if f.stem in ("scene", "instance"):
            out[f"{f.parent.name}/{f.name}"] = prepare_image(load_image(f, 1024)[0], RES, "center", 64)[0]
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0 ** 2 / max(np.mean((a.astype(np.float64) - b) ** 2), 1e-10)))


def vae_fidelity(pipe, photos: dict[str, Image.Image]) -> dict:
    """PSNR and LPIPS (AlexNet, the study's evaluator) of the VAE round trip and of bicubic down-up."""
    from dreamsolo.metrics.lpips_metric import load_lpips
    from dreamsolo.sampling import decode, encode_latents

    lp = load_lpips("alex", pretrained=True)
    rows = {}
    for name, im in photos.items():
        z = encode_latents(pipe.vae, [im])["mean"] * pipe.vae.config.scaling_factor
        outs = {"vae": decode(pipe, z)[0]}
        for k in (2, 4):
            outs[f"bicubic_x{k}"] = im.resize((RES // k,) * 2, Image.BICUBIC).resize((RES,) * 2, Image.BICUBIC)
        dist = lp.paired(list(outs.values()), [im] * len(outs), (RES, RES)).tolist()
        rows[name] = {**{k: psnr(np.asarray(v), np.asarray(im)) for k, v in outs.items()},
                      **{f"lpips_{k}": d for k, d in zip(outs, dist)}}
    keys = list(next(iter(rows.values())))
    mean = {k: float(np.mean([r[k] for r in rows.values()])) for k in keys}
    return {"mean_psnr_db": {k: v for k, v in mean.items() if not k.startswith("lpips")},
            "mean_lpips": {k[6:]: v for k, v in mean.items() if k.startswith("lpips")}, "per_photo": rows}


def sample(pipe, prompts: list[str], seeds: list[int]) -> list[Image.Image]:
    from dreamsolo.sampling import generate

    return generate(pipe, prompts, seeds, steps=SAMPLE_STEPS, guidance_scale=GUIDANCE, resolution=RES,
                    batch_size=8, desc="probe")


def class_grid(pipe, out: Path, seeds=(0, 1, 2, 3)) -> tuple[Path, dict]:
    """The class prompts x seeds grid, and how distinct the classes are: mean LPIPS between two classes'
    samples of the same seed (the noise is shared, only the prompt differs) against mean LPIPS between
    two seeds of the same class. Between > within: the prompt, not the noise, decides the image."""
    from itertools import combinations

    from dreamsolo.metrics.lpips_metric import load_lpips

    ims = sample(pipe, [f"a photo of a {c}" for c in CLASSES for _ in seeds], list(seeds) * len(CLASSES))
    grid = Image.new("RGB", (RES * len(seeds), RES * len(CLASSES)))
    for i, im in enumerate(ims):
        grid.paste(im, (RES * (i % len(seeds)), RES * (i // len(seeds))))
    path = out / "toy_classes.png"
    grid.save(path, optimize=True)
    lp, n = load_lpips("alex", pretrained=True), len(seeds)
    between = [(c1 * n + s, c2 * n + s) for c1, c2 in combinations(range(len(CLASSES)), 2) for s in range(n)]
    within = [(c * n + s1, c * n + s2) for c in range(len(CLASSES)) for s1, s2 in combinations(range(n), 2)]
    mean = {k: float(lp.paired([ims[i] for i, _ in pairs], [ims[j] for _, j in pairs], (RES, RES)).mean())
            for k, pairs in (("between_classes_same_seed", between), ("within_class_other_seed", within))}
    return path, mean


def distances(ims: list[Image.Image], ref: Image.Image) -> dict:
    r = np.asarray(ref, np.float64)
    mse = [float(np.mean((np.asarray(im, np.float64) - r) ** 2)) for im in ims]
    return {"mse": float(np.mean(mse)), "psnr_db": psnr_of_mse(float(np.mean(mse)))}


def psnr_of_mse(mse: float) -> float:
    return float(10 * np.log10(255.0 ** 2 / mse))


def make_priors(pipe, out: Path, n: int = 16) -> Path:
    """The base model's `a photo of a cat` images, as generate_priors stores them (posterior mean/std)."""
    from safetensors.torch import save_file

    from dreamsolo.sampling import encode_latents

    path = out / "priors_cat.safetensors"
    lat = encode_latents(pipe.vae, sample(pipe, ["a photo of a cat"] * n, list(range(1000, 1000 + n))))
    save_file(lat, path)
    return path


PROMPTS = ("a photo of sks cat", "a photo of a cat")


def binding(model: Path, instance: Image.Image, out: Path, steps: int, lr: float, seeds: list[int],
            priors: Path, train_text_encoder: bool = False) -> dict:
    from dreamsolo.config import Train
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.sampling import use_fast_sampler
    from dreamsolo.training.loop import StageInputs, train_stage

    tag = f"s{steps}_lr{lr:g}" + ("_te" if train_text_encoder else "")
    inp = StageInputs(init_dir=model, out_dir=out / tag, ckpt_dir=out / f"{tag}.ckpt", image=out / "instance.png",
                      prompt="a photo of sks cat", prior_latents=priors, prior_prompt="a photo of a cat")
    cfg = Train(steps=steps, lr=lr, warmup_steps=min(5, steps), batch_size=1, prior_weight=1.0,
                checkpoint_every=10 ** 6, train_text_encoder=train_text_encoder)
    summary = train_stage(inp, cfg, desc=f"binding {tag}")
    tuned = load_pipeline(out / tag)
    use_fast_sampler(tuned)
    res = {"steps": steps, "lr": lr, "train_text_encoder": train_text_encoder, "train_s": summary["seconds"],
           "final_loss": summary["final"]}
    for prompt in PROMPTS:
        res[f"tuned: {prompt}"] = distances(sample(tuned, [prompt] * len(seeds), seeds), instance)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=Path("/tmp/toy_probe"))
    ap.add_argument("--steps", default="30,100")
    ap.add_argument("--lrs", default="1e-4,3e-4")
    ap.add_argument("--train-text-encoder", action="store_true", help="fine-tune the text encoder too")
    ap.add_argument("--seeds", type=int, default=8, help="samples per prompt in the binding check (seeds 0..n-1)")
    a = ap.parse_args()
    torch.set_num_threads(1)
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.sampling import use_fast_sampler

    a.out.mkdir(parents=True, exist_ok=True)
    pipe = load_pipeline(a.model)
    use_fast_sampler(pipe)
    photos = study_photos()
    report = {"vae": vae_fidelity(pipe, photos)}
    print(json.dumps({k: report["vae"][k] for k in ("mean_psnr_db", "mean_lpips")}))
    grid, separation = class_grid(pipe, a.out)
    report["grid"], report["class_separation_lpips"] = str(grid), separation
    print(json.dumps(separation))
    if not a.steps:  # --steps "": fidelity and the class grid only (the study's method checks do the rest)
        (a.out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
        return
    instance = photos["cat_grass/instance.jpg"]
    instance.save(a.out / "instance.png")
    priors = make_priors(pipe, a.out)
    seeds = list(range(a.seeds))
    report["base"] = {f"base: {p}": distances(sample(pipe, [p] * len(seeds), seeds), instance) for p in PROMPTS}
    print(json.dumps(report["base"]))
    report["binding"] = [binding(a.model, instance, a.out, int(s), float(lr), seeds, priors, a.train_text_encoder)
                         for s in a.steps.split(",") for lr in a.lrs.split(",")]
    (a.out / "probe.json").write_text(json.dumps(report, indent=2) + "\n")
    for b in report["binding"]:
        print(json.dumps({k: (v["psnr_db"] if isinstance(v, dict) and "psnr_db" in v else v) for k, v in b.items()}))


if __name__ == "__main__":
    main()
