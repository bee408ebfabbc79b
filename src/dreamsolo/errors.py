"""The errors that mean "your input or your run stopped this, not a bug", and how they are shown."""

from __future__ import annotations

import errno
import sys


class UserError(Exception):
    """Printed by the stage wrapper and the CLI as one line naming what is wrong, without a traceback.
    Subclasses: params problems, an unreachable tracking server, a diverged or interrupted training."""


# Shown as one line: our own errors, and a missing file or a bad value from the standard library.
USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError, ValueError)


class one_line_errors:
    """Ctrl-C exits 130 (`<where>: interrupted`); a user error exits 1 with `error: [<where>: ]<message>`;
    anything else propagates with its traceback (a bug)."""

    def __init__(self, where: str, name_in_errors: bool = True) -> None:
        self.where = where
        self.prefix = f"{where}: " if name_in_errors else ""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, err, _tb) -> bool:
        if isinstance(err, KeyboardInterrupt):
            print(f"{self.where}: interrupted", file=sys.stderr)
            sys.exit(130)
        if isinstance(err, USER_ERRORS):
            print(f"error: {self.prefix}{err}", file=sys.stderr)
            sys.exit(1)
        if isinstance(err, OSError) and err.errno in DISK_ERRORS:
            print(f"error: {self.prefix}{disk_error(err)}", file=sys.stderr)
            sys.exit(1)
        return False


# The machine's disk, not the code: a full or read-only disk, a folder the user cannot write.
DISK_ERRORS = {errno.ENOSPC: "free some space", errno.EDQUOT: "free some space (disk quota)",
               errno.EROFS: "the file system is read-only", errno.EACCES: "make it writable",
               errno.EPERM: "make it writable"}


def disk_error(err: OSError) -> str:
    """One line: the file, what happened, what to do. Outputs are written to temporary names and
    renamed into place (dreamsolo.files), so nothing half-written was kept."""
    where = f"{err.filename}: " if err.filename else ""
    return f"{where}{err.strerror or err}; {DISK_ERRORS[err.errno]} and rerun (no half-written output was kept)"
