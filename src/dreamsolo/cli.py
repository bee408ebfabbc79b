"""Command-line entry points: the DVC stage wrapper and the `dreamsolo` command."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from dreamsolo.config import ParamsError, Study, load_study
from dreamsolo.paths import repo_root

# Errors that mean "your input is wrong": one line, no traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (ParamsError, FileNotFoundError, ValueError)


def _user_errors() -> tuple[type[BaseException], ...]:
    from dreamsolo.tracking import TrackingUnreachable

    extra: list[type[BaseException]] = [TrackingUnreachable]
    if "dreamsolo.training.loop" in sys.modules:
        from dreamsolo.training.loop import Interrupted, TrainingDiverged

        extra += [Interrupted, TrainingDiverged]
    return USER_ERRORS + tuple(extra)


def stage_main(fn: Callable[[Study, str | None], object], name: str, key: str | None = None) -> None:
    """Parse `--<key> ID`, load params, run one stage function; a user error exits 1 with one line."""
    from dreamsolo.warm import handoff

    handoff()  # on a CPU box: the rest runs in an already-warm process (see dreamsolo.warm)
    parser = argparse.ArgumentParser(prog=f"stages/{name}.py", description=f"DVC stage `{name}`")
    if key:
        parser.add_argument(f"--{key}", required=True, dest="item")
    args = parser.parse_args()
    try:
        study = load_study(repo_root())
        from dreamsolo.tracking import start_worker

        start_worker(study.root)
        fn(study, getattr(args, "item", None))
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - user errors get one line; the rest a traceback
        if not isinstance(e, _user_errors()):
            raise
        print(f"error: {name}: {e}", file=sys.stderr)
        sys.exit(1)


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
    args = parser.parse_args(argv)
    try:
        from dreamsolo.samples import adhoc

        study = load_study(repo_root())
        paths = adhoc(study, args.pair, args.prompt, n=args.n, seed=args.seed, stage=args.stage, out=args.out)
    except KeyboardInterrupt:
        print("dreamsolo sample: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # noqa: BLE001 - user errors get one line; the rest a traceback
        if not isinstance(e, _user_errors()):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    for path in paths:  # stdout: the files, one per line (the prompt used is in adhoc.json beside them)
        print(path)
