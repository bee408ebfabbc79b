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
    args = parser.parse_args(argv)
    with one_line_errors("dreamsolo sample", name_in_errors=False):
        from dreamsolo.adhoc import adhoc

        study = load_study(repo_root())
        paths = adhoc(study, args.pair, args.prompt, n=args.n, seed=args.seed, stage=args.stage, out=args.out)
    for path in paths:  # stdout: the files, one per line (the prompt used is in adhoc.json beside them)
        print(path)
