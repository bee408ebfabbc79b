"""Files: atomic writes (a stage's outputs appear whole or not at all) and the one file hasher."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a fresh temporary sibling of `final`; on success it replaces `final`, on error it is removed."""
    final.parent.mkdir(parents=True, exist_ok=True)
    for stale in final.parent.glob(f".{final.name}.tmp-*"):  # left by a killed earlier run of this stage
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        follow_umask(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


@contextlib.contextmanager
def atomic_file(final: Path) -> Iterator[Path]:
    """Yield a temporary path next to `final`; it is renamed over `final` only if the block succeeds."""
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        follow_umask(tmp)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)


def umask() -> int:
    """The process's umask, read without changing it where Linux says it (os.umask can only set it)."""
    with contextlib.suppress(OSError, StopIteration, ValueError):
        with open("/proc/self/status") as f:
            return int(next(line for line in f if line.startswith("Umask:")).split()[1], 8)
    old = os.umask(0o022)
    os.umask(old)
    return old


def follow_umask(root: Path) -> None:
    """Give `root` (and everything under it) the modes a plain write would: mkstemp / mkdtemp and
    safetensors make owner-only files, which a teammate on a shared machine could not read."""
    mask = umask()
    paths = [root, *root.rglob("*")] if root.is_dir() else [root]
    for path in paths:
        want = (0o777 if path.is_dir() else 0o666) & ~mask
        if not path.is_symlink() and path.stat().st_mode & 0o777 != want:
            path.chmod(want)


def write_json(path: Path, data: Any) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False, default=_plain) + "\n")


def _plain(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")



def file_digest(path: Path, algo: str = "sha256", into=None) -> str:
    """Hex digest of a file read in 1 MiB blocks; with `into`, update that hash object instead (and
    return its running digest), so several files can be hashed into one fingerprint."""
    h = into if into is not None else hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
