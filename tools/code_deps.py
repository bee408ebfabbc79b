"""The project files each DVC stage's code imports, transitively, and the fingerprints the stages depend on.

A stage's code is exactly these files: its script `stages/<name>.py`, every `src/dreamsolo` module it
imports at any depth (imports inside functions included: a lazy import still runs when the stage does;
`if TYPE_CHECKING:` blocks excluded: they never run), each package `__init__.py` on the way, and the
package data files a module in that closure names (e.g. tiny-clip.json).

dvc.yaml does not list those ~40 files in every stage instance: DVC loads and rewrites the whole dvc.lock
after each stage, and per-file code deps made up 93 % of it (841 kB with the arms on, ~7 s per stage).
Instead one stage, `code`, depends on every project file some stage imports and writes one fingerprint
per stage script, `fingerprints/<script>.txt` (the sha256 of each file of its closure); each stage
depends on its script's fingerprint. Editing a file reruns `code` (no torch, about a second), which
rewrites every fingerprint; only the fingerprints whose closure holds the file change bytes, so exactly
the stages whose code can run the file rerun after it.

    python tools/code_deps.py                # list drift, exit 1 if any (tests/test_code_deps.py runs this check)
    python tools/code_deps.py --show         # every stage's closure
    python tools/code_deps.py --write        # rewrite the `code` stage and the code deps in dvc.yaml
    python tools/code_deps.py --fingerprint  # the `code` stage's command: write fingerprints/*.txt
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import sys
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "dreamsolo"
SRC = REPO / "src"
CODE_STAGE = "code"  # the fingerprint stage's name in dvc.yaml
FINGERPRINTS = "fingerprints"  # its output folder (git-tracked, cache: false)
TOOL = "tools/code_deps.py"


def module_file(name: str) -> Path | None:
    """The file of a dreamsolo module (`a.b` -> src/a/b.py or src/a/b/__init__.py), else None."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imported(tree: ast.AST, here: str) -> set[str]:
    """Names of the modules an AST imports (absolute; `from pkg import mod` yields pkg and pkg.mod)."""
    found: set[str] = set()
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parts = here.split(".")[: -node.level]
                base = ".".join([*parts, base] if base else parts)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        todo.extend(ast.iter_child_nodes(node))
    return found


def _with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@cache
def _direct(path: Path) -> frozenset[Path]:
    """The project files `path` imports directly (each package __init__ on the way included)."""
    rel = path.relative_to(SRC).with_suffix("") if path.is_relative_to(SRC) else None
    here = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts) if rel else "__main__"
    out = set()
    for name in _imported(ast.parse(path.read_text(), str(path)), here):
        if name.split(".")[0] != PACKAGE:
            continue
        for part in _with_parents(name):
            file = module_file(part)
            if file is not None:
                out.add(file)
    return frozenset(out)


@cache
def _package_data() -> tuple[Path, ...]:
    """The non-Python files in src/dreamsolo, less those git ignores (a locally made file, such as a
    converted trunk nobody ships, is no dep). Not "what git tracks": a new study's first `dvc repro`
    often runs before `git add`."""
    import subprocess

    files = [p for p in sorted((SRC / PACKAGE).rglob("*")) if p.is_file() and p.suffix not in (".py", ".pyc")
             and p.name != ".gitignore" and "__pycache__" not in p.parts]
    rel = [p.relative_to(REPO).as_posix() for p in files]
    out = subprocess.run(["git", "check-ignore", "-z", "--stdin"], cwd=REPO, input="\0".join(rel).encode(),
                         capture_output=True)  # exit 1: none ignored; 128: not a git repo (none ignored)
    ignored = set(out.stdout.decode().split("\0")) if out.returncode == 0 else set()
    return tuple(p for p, r in zip(files, rel) if r not in ignored)


def _data_files(modules: set[Path]) -> set[Path]:
    """Package data named (by file name) in the source of a module of the closure."""
    return {d for d in _package_data() if d.suffix != ".md" and any(d.name in m.read_text() for m in modules)}


def closure(script: Path) -> set[str]:
    """Every project file (repo-relative, POSIX) that running `script` can import or read as package data."""
    seen: set[Path] = set()
    todo = [script]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        todo.extend(_direct(path) - seen)
    files = seen | _data_files(seen - {script})
    return {p.relative_to(REPO).as_posix() for p in files}


def stage_scripts(dvc: dict) -> dict[str, Path]:
    """DVC stage name -> the script its cmd runs (`python stages/<x>.py ...`)."""
    out = {}
    for name, stage in dvc["stages"].items():
        if name == CODE_STAGE:
            continue
        body = stage.get("do", stage)
        script = next(w for w in body["cmd"].split() if w.endswith(".py"))
        out[name] = REPO / script
    return out


def fingerprint_of(script: Path) -> str:
    return f"{FINGERPRINTS}/{script.stem}.txt"


def code_deps(stage: dict) -> set[str]:
    """The deps of a dvc.yaml stage that are project code (stages/, src/, tools/ or a fingerprint)."""
    body = stage.get("do", stage)
    return {d for d in body.get("deps", []) if d.startswith(("src/", "stages/", "tools/", f"{FINGERPRINTS}/"))}


def wanted(dvc: dict) -> dict[str, set[str]]:
    """Stage -> the code deps it should list: its fingerprint; for `code`, every file of every closure."""
    scripts = stage_scripts(dvc)
    out = {name: {fingerprint_of(script)} for name, script in scripts.items()}
    out[CODE_STAGE] = set().union(*(closure(s) for s in set(scripts.values()))) | {TOOL}
    return out


def fingerprint_outs(dvc: dict) -> set[str]:
    return {fingerprint_of(s) for s in stage_scripts(dvc).values()}


def drift(dvc_file: Path | None = None) -> dict[str, tuple[list[str], list[str]]]:
    """Stage -> (code deps missing, code deps not wanted); only stages that drift. The `code` stage's
    outs are checked too (a missing fingerprint shows as missing)."""
    dvc = yaml.safe_load((dvc_file or REPO / "dvc.yaml").read_text())
    want = wanted(dvc)
    stages = dvc["stages"]
    have = {name: code_deps(stages[name]) if name in stages else set() for name in want}
    code = stages.get(CODE_STAGE, {})
    outs = {next(iter(o)) if isinstance(o, dict) else o for o in code.get("outs", [])}
    want[CODE_STAGE] |= {f"outs: {o}" for o in fingerprint_outs(dvc)}
    have[CODE_STAGE] |= {f"outs: {o}" for o in outs}
    return {n: (sorted(want[n] - have[n]), sorted(have[n] - want[n])) for n in want if want[n] != have[n]}


def code_block(dvc: dict) -> list[str]:
    """The `code` stage of dvc.yaml, generated."""
    lines = [f"  {CODE_STAGE}:  # one fingerprint per stage script: the hash of each file its code imports "
             f"(tools/code_deps.py)", f"    cmd: python {TOOL} --fingerprint", "    deps:"]
    lines += [f"      - {f}" for f in sorted(wanted(dvc)[CODE_STAGE])]
    # every stage waits on `code`, so checking params.yaml here refuses a bad edit before DVC removes
    # any stage's outputs; persist: the fingerprints stay in place while the check runs
    lines += ["    params:", "      - params.yaml:  # all of it: checked before any stage runs (check_params)"]
    lines += ["    outs:"] + [f"      - {o}:\n          cache: false\n          persist: true"
                               for o in sorted(fingerprint_outs(dvc))]
    return "\n".join(lines).split("\n") + [""]


def rewrite(text: str) -> str:
    """dvc.yaml with the `code` stage generated (first under `stages:`) and each stage's code deps
    replaced by its fingerprint, after its data deps; the rest (comments, order, keys) kept line for line."""
    dvc = yaml.safe_load(text)
    want = wanted(dvc)
    out, stage, in_deps, indent = [], None, False, ""
    for line in text.splitlines():
        stripped = line.strip()
        key = stripped.split("#", 1)[0].strip()
        if line.startswith("  ") and not line.startswith("   ") and key.endswith(":"):
            if stage is None:
                out += code_block(dvc)
            stage = key[:-1]  # a stage's key (two-space indent under `stages:`)
        if stage == CODE_STAGE:
            continue
        if in_deps and not (stripped.startswith("- ") and line.startswith(indent)):
            out += [f"{indent}- {f}" for f in sorted(want[stage])]
            in_deps = False
        if stripped == "deps:" and stage in want:
            in_deps, indent = True, line[: len(line) - len(line.lstrip())] + "  "
        elif in_deps and stripped[2:].startswith(("src/", "stages/", "tools/", f"{FINGERPRINTS}/")):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def fingerprint(files: set[str]) -> str:
    """One line per file: its sha256 and path (so `git diff fingerprints/` says which file changed)."""
    return "".join(f"{hashlib.sha256((REPO / f).read_bytes()).hexdigest()}  {f}\n" for f in sorted(files))


def write_fingerprints() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    folder = REPO / FINGERPRINTS
    folder.mkdir(exist_ok=True)
    for script in sorted(set(stage_scripts(dvc).values())):
        (REPO / fingerprint_of(script)).write_text(fingerprint(closure(script)))


def check_params() -> bool:
    """params.yaml as the stages will read it; a bad one is refused here, in one line, before DVC
    runs (and so removes the outputs of) any stage that reads it."""
    sys.path.insert(0, str(REPO / "src"))
    from dreamsolo.config import load_study
    from dreamsolo.errors import USER_ERRORS
    from dreamsolo.machine import check_runnable

    try:  # and what this machine cannot run (fp16 without a GPU): torch is imported only for such a setting
        check_runnable(load_study(REPO))
    except USER_ERRORS as err:
        text = str(err)
        print(f"error: {text if text.startswith('params.yaml') else 'params.yaml: ' + text} "
              "(nothing was run and no output was removed: fix it and rerun)", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", action="store_true", help="print every stage's closure")
    ap.add_argument("--write", action="store_true", help="rewrite the code stage and code deps in dvc.yaml")
    ap.add_argument("--fingerprint", action="store_true", help="write fingerprints/<script>.txt (the code stage)")
    args = ap.parse_args(argv)
    if args.write:
        path = REPO / "dvc.yaml"
        path.write_text(rewrite(path.read_text()))
    if args.fingerprint and not check_params():
        return 1
    if args.fingerprint and not drift():
        write_fingerprints()
        return 0
    if args.show:
        dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
        for name, script in stage_scripts(dvc).items():
            print(f"{name}:\n" + "".join(f"  - {f}\n" for f in sorted(closure(script))))
        return 0
    bad = drift()
    for name, (missing, extra) in bad.items():
        for f in missing:
            print(f"dvc.yaml: stage {name}: should list {f} (fix: python {TOOL} --write)")
        for f in extra:
            print(f"dvc.yaml: stage {name}: lists {f}, which its code does not need (fix: python {TOOL} --write)")
    if bad and args.fingerprint:  # a file some stage imports that `code` does not watch: stop, or reruns go stale
        print("fingerprints not written: dvc.yaml's code deps drifted", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
