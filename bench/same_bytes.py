"""Does a refactor change any output? Reproduce a small study with the code of a git revision, then
`dvc repro` it again with the code of this working tree, and compare every output's hash in dvc.lock.

    python bench/same_bytes.py                  # main's code vs the working tree, two pairs on `tiny`
    python bench/same_bytes.py --before HEAD~3 --preset toy --pairs cat_grass

Only code moves between the two runs (src/, stages/, tools/, dvc.yaml): params and data stay the first
revision's, so a stage reruns because its code fingerprint changed, and its outputs must come out the
same bytes. Prints one line per stage (reran or not, outputs same or not); exits 1 if any output differs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CODE = ["src", "stages", "tools", "dvc.yaml"]


def sh(cmd: list[str], cwd: Path, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return proc


def code_env(code: Path) -> dict[str, str]:
    """Stage processes import the library from `code` (ahead of the editable install)."""
    return {**os.environ, "PYTHONPATH": str(code / "src"), "DVC_NO_ANALYTICS": "1", "PYTHONWARNINGS": "ignore"}


def outs(root: Path) -> dict[str, dict[str, str]]:
    """{stage: {out path: md5}} from dvc.lock."""
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    return {name: {o["path"]: o.get("md5", "") for o in s.get("outs", [])} for name, s in stages.items()}


def swap_code(study: Path, code: Path) -> None:
    for name in CODE:
        dest = study / name
        if dest.is_dir():
            shutil.rmtree(dest)
        src = code / name
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dest)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default="main", help="git revision whose code builds the study first")
    ap.add_argument("--preset", default="tiny", help="model.preset of the study (tiny: seconds a stage)")
    ap.add_argument("--pairs", nargs="+", default=["cat_grass", "cat_brick"])
    a = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="same-bytes-"))
    before = work / "before"
    before.mkdir()
    archive = subprocess.run(["git", "archive", a.before], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive, check=True)
    make = ("import sys; sys.path.insert(0, 'tests'); from pathlib import Path; from studykit import make_study; "
            f"make_study(Path({str(work / 'study')!r}), {a.pairs!r}, {{'model.preset': {a.preset!r}}}, git=True)")
    sh([sys.executable, "-c", make], before, code_env(before))
    study = work / "study"
    print(f"study in {study}: dvc repro with the code of {a.before} ...", flush=True)
    sh(["dvc", "repro"], study, code_env(before), timeout=3600)
    first = outs(study)
    swap_code(study, REPO)
    print("dvc repro with the working tree's code ...", flush=True)
    out = sh(["dvc", "repro"], study, code_env(REPO), timeout=3600).stdout
    second = outs(study)
    differ = 0
    for stage in sorted(set(first) | set(second)):
        reran = f"Running stage '{stage}'" in out
        same = first.get(stage) == second.get(stage)
        if stage == "code":  # its outputs are the code's own fingerprints: they change with it
            print(f"{stage:40s} {'reran' if reran else 'kept '}  (fingerprints of the code)")
            continue
        differ += not same
        print(f"{stage:40s} {'reran' if reran else 'kept '}  {'same bytes' if same else 'DIFFERENT'}")
    print(f"{differ} stage(s) with different outputs" if differ else "every output the same bytes")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
