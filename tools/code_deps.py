"""The project files each DVC stage's code imports, transitively, compared with its `deps` in dvc.yaml.

A stage's code deps are exactly these files: its script `stages/<name>.py`, every `src/dreamsolo` module it
imports at any depth (imports inside functions included: a lazy import still runs when the stage does;
`if TYPE_CHECKING:` blocks excluded: they never run), each package `__init__.py` on the way, and the
package data files a module in that closure names (e.g. tiny-clip.json). So editing a file reruns exactly
the stages whose code can run it.

    python tools/code_deps.py            # list drift, exit 1 if any (tests/test_code_deps.py runs this check)
    python tools/code_deps.py --show     # every stage's closure
    python tools/code_deps.py --write    # rewrite the code deps in dvc.yaml (other lines kept as they are)
"""

from __future__ import annotations

import argparse
import ast
import sys
from functools import cache
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "dreamsolo"
SRC = REPO / "src"


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


def _package_data() -> list[Path]:
    """The non-Python files git tracks in src/dreamsolo (a locally made, ignored file is no dep)."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "-z", f"src/{PACKAGE}"], cwd=REPO, capture_output=True, check=True)
    files = [REPO / f for f in out.stdout.decode().split("\0") if f]
    return [p for p in files if p.suffix != ".py" and p.name not in (".gitignore",) and p.is_file()]


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
        body = stage.get("do", stage)
        script = next(w for w in body["cmd"].split() if w.endswith(".py"))
        out[name] = REPO / script
    return out


def code_deps(stage: dict) -> set[str]:
    """The deps of a dvc.yaml stage that are project code (stages/ and src/)."""
    body = stage.get("do", stage)
    return {d for d in body.get("deps", []) if d.startswith(("src/", "stages/"))}


def drift(dvc_file: Path = REPO / "dvc.yaml") -> dict[str, tuple[list[str], list[str]]]:
    """Stage -> (files imported but not declared, declared but not imported); only stages that drift."""
    dvc = yaml.safe_load(dvc_file.read_text())
    out = {}
    for name, script in stage_scripts(dvc).items():
        want, have = closure(script), code_deps(dvc["stages"][name])
        if want != have:
            out[name] = (sorted(want - have), sorted(have - want))
    return out


def rewrite(text: str, closures: dict[str, set[str]]) -> str:
    """dvc.yaml with each stage's code deps replaced by its closure, after its data deps; the rest of
    the file (comments, order, other keys) is kept line for line."""
    out, stage, in_deps, indent = [], None, False, ""
    for line in text.splitlines():
        stripped = line.strip()
        key = stripped.split("#", 1)[0].strip()
        if line.startswith("  ") and not line.startswith("   ") and key.endswith(":"):
            stage = key[:-1]  # a stage's key (two-space indent under `stages:`)
        if in_deps and not (stripped.startswith("- ") and line.startswith(indent)):
            out += [f"{indent}- {f}" for f in sorted(closures[stage])]
            in_deps = False
        if stripped == "deps:" and stage in closures:
            in_deps, indent = True, line[: len(line) - len(line.lstrip())] + "  "
        elif in_deps and stripped[2:].startswith(("src/", "stages/")):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", action="store_true", help="print every stage's closure")
    ap.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml")
    args = ap.parse_args(argv)
    if args.write:
        path = REPO / "dvc.yaml"
        dvc = yaml.safe_load(path.read_text())
        path.write_text(rewrite(path.read_text(), {n: closure(s) for n, s in stage_scripts(dvc).items()}))
    if args.show:
        dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
        for name, script in stage_scripts(dvc).items():
            print(f"{name}:\n" + "".join(f"  - {f}\n" for f in sorted(closure(script))))
        return 0
    bad = drift()
    for name, (missing, extra) in bad.items():
        for f in missing:
            print(f"dvc.yaml: stage {name}: imports {f} but does not list it in deps")
        for f in extra:
            print(f"dvc.yaml: stage {name}: lists {f} in deps but its code does not import it")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
