"""The `dreamsolo` command (the DVC stages' wrapper is `dreamsolo.stages.stage_main`)."""

from __future__ import annotations

import argparse

from dreamsolo.config import load_study
from dreamsolo.errors import one_line_errors
from dreamsolo.layout import repo_root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="dreamsolo")
    sub = parser.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sample", help="ad-hoc images from a trained pair (outside the pipeline's outputs)")
    s.add_argument("--pair", required=True)
    s.add_argument("--prompt", required=True, help="use <S> and <V> for the instance and scene identifiers")
    s.add_argument("--n", type=int, default=4)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--stage", choices=["scene", "instance"], default="instance")
    s.add_argument("--out", default=None, help="folder (default: samples-adhoc/<pair>/)")
    w = sub.add_parser("sweep", help="run a sweep of sweeps.yaml as DVC experiments, then write its report")
    w.add_argument("name", help="a sweep of sweeps.yaml")
    w.add_argument("-j", "--jobs", type=int, default=1, help="experiments run at once (dvc queue start -j)")
    w.add_argument("--report-only", action="store_true", help="only (re)write the report of the finished points")
    w.add_argument("--check", action="store_true", help="only check sweeps.yaml and list the points")
    r = sub.add_parser("repro", help="dvc repro of the study, N pairs at a time, each stage on its own device")
    r.add_argument("-j", "--jobs", type=int, default=1, help="pairs at a time (default 1)")
    r.add_argument("-f", "--force", action="store_true", help="rerun every stage, as dvc repro -f")
    sub.add_parser("check", help="check params.yaml and what this machine can run, as `dvc repro` would first "
                   "(one line per refusal; for plain `dvc repro`, whose own parse errors come first)")
    u = sub.add_parser("ui", help="mlflow ui on the study's store, and the link to its runs view")
    u.add_argument("--host", default="127.0.0.1", help="127.0.0.1 (default): this machine only")
    u.add_argument("--port", type=int, default=5000)
    args = parser.parse_args(argv)
    if args.cmd == "ui":
        _ui(args)
        return
    if args.cmd == "check":
        with one_line_errors("dreamsolo check", name_in_errors=False):
            study = checked_study()
        print(f"params.yaml: ok ({len(study.pairs)} pairs, {len(study.classes)} classes, preset {study.preset_name})")
        return
    if args.cmd == "repro":
        with one_line_errors("dreamsolo repro", name_in_errors=False):
            from dreamsolo.parallel import repro

            study = checked_study()  # before DVC parses dvc.yaml: its ${...} errors would come first otherwise
            repro(study.root, list(study.pairs), args.jobs, args.force)
        return
    if args.cmd == "sweep":
        with one_line_errors("dreamsolo sweep", name_in_errors=False):
            _sweep(args)
        return
    with one_line_errors("dreamsolo sample", name_in_errors=False):
        from dreamsolo.sample_command import adhoc

        study = load_study(repo_root())
        paths = adhoc(study, args.pair, args.prompt, n=args.n, seed=args.seed, stage=args.stage, out=args.out)
    for path in paths:  # stdout: the files, one per line (the prompt used is in adhoc.json beside them)
        print(path)


def checked_study():
    """params.yaml loaded and checked, and refused where this machine cannot run it: what the `code` stage
    checks, but before DVC resolves dvc.yaml (an empty pair id or an empty file stops DVC there, in its words)."""
    from dreamsolo.machine import check_runnable

    study = load_study(repo_root())
    check_runnable(study)
    return study


def _ui(args: argparse.Namespace) -> None:
    import os
    import sys

    with one_line_errors("dreamsolo ui", name_in_errors=False):
        from dreamsolo.tracking.ui import ui_command

        url, cmd = ui_command(repo_root(), args.host, args.port)
    print(f"the study's runs: {url}", flush=True)
    if cmd is None:
        return
    print("(MLflow's own list opens an experiment on the page of its GenAI | Model training toggle, top left; "
          "the browser keeps the choice)", file=sys.stderr, flush=True)
    os.execv(cmd[0], cmd)  # mlflow ui in this process: Ctrl-C stops it


def _sweep(args: argparse.Namespace) -> None:
    from dreamsolo.sweeps.queue import declared_params, run_sweep
    from dreamsolo.sweeps.report import write_report
    from dreamsolo.sweeps.spec import load_sweep

    root = repo_root()
    if args.jobs < 1:
        raise ValueError(f"-j/--jobs: expected at least 1, got {args.jobs}")
    sweep = load_sweep(root, args.name, declared_params(root))
    if args.check:
        for p in sweep.points:
            print(f"{p.name}  {p.label}")
        return
    if not args.report_only:
        if args.jobs > 1:  # each point's stages on their own device (dreamsolo.devices); the workers inherit it
            from dreamsolo.devices import set_default

            set_default(args.jobs)
        run_sweep(root, sweep, args.jobs)
    dest = write_report(root, sweep)
    print(dest / "index.html")
