"""Repository-anchored paths. Every path built from params or pair ids goes through here."""

from __future__ import annotations

import os
import re
from pathlib import Path

SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # used with fullmatch: no trailing newline
# Folders a stage may write below; a path that resolves elsewhere is refused.
WRITABLE = ("data", "models", "reports")


def repo_root() -> Path:
    """The study root: $DREAMSOLO_ROOT, else the nearest parent of the cwd holding params.yaml."""
    env = os.environ.get("DREAMSOLO_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for p in (here, *here.parents):
        if (p / "params.yaml").is_file():
            return p
    raise FileNotFoundError(f"no params.yaml in {here} or its parents: run from the study root")


def check_id(kind: str, value: str) -> str:
    """Pair and class ids become folder names: refuse anything that is not a plain name."""
    if not isinstance(value, str) or not SAFE_ID.fullmatch(value) or value in (".", ".."):
        raise ValueError(
            f"{kind} id {value!r} is not a safe folder name "
            "(letters, digits, '_', '-', '.'; must start with a letter or digit; at most 64 chars)"
        )
    return value


def inside(root: Path, path: Path) -> Path:
    """Resolve `path` under `root` and refuse it if it escapes data/, models/ or reports/."""
    full = (root / path).resolve()
    for top in WRITABLE:
        if full.is_relative_to((root / top).resolve()):
            return full
    raise ValueError(f"path {path} leaves the study's data/, models/ and reports/ folders")
