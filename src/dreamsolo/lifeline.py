"""A stage stops with the `dvc repro` that started it.

DVC runs a stage's command in a child process. SIGTERM to the `dvc` process alone (a closed terminal, a
scheduler's timeout) ends DVC but not the child, which would go on writing outputs DVC never records.
A daemon thread watches the nearest `dvc` ancestor and, once it is gone, sends this process SIGTERM: the
stage then stops as on its own SIGTERM (training saves a checkpoint; the warm client forwards it).
Linux only (it reads /proc); elsewhere, and outside DVC, it does nothing.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

POLL_S = 0.5


def _stat(pid: int) -> tuple[int, str] | None:
    """(parent pid, start time) of `pid`, or None if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return int(fields[1]), fields[19]


def _is_dvc(pid: int) -> bool:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    names = [os.path.basename(a.decode(errors="replace")) for a in argv[:3] if a]
    return "dvc" in names or names[1:3] == ["-m", "dvc"]


def dvc_ancestor() -> tuple[int, str] | None:
    """(pid, start time) of the nearest `dvc` process above this one, if any."""
    pid = os.getppid()
    while pid > 1:
        stat = _stat(pid)
        if stat is None:
            return None
        if _is_dvc(pid):
            return pid, stat[1]
        pid = stat[0]
    return None


def _watch(pid: int, started: str) -> None:
    while True:
        stat = _stat(pid)
        if stat is None or stat[1] != started:  # gone (or its pid reused by another process)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        time.sleep(POLL_S)


def hold() -> None:
    """Start the watch (once per process) when this process runs under `dvc`."""
    from dreamsolo.warm.server import fresh_fork

    # a stage forked by the warm server is watched through its client (which forwards the SIGTERM);
    # the server's own ancestors are whichever `dvc` first started it
    if fresh_fork() or not Path("/proc/self/stat").exists() or getattr(hold, "started", False):
        return
    found = dvc_ancestor()
    if found is None:
        return
    hold.started = True  # type: ignore[attr-defined]
    threading.Thread(target=_watch, args=found, name="dvc-lifeline", daemon=True).start()
