"""The warm stage server (its client side is dreamsolo.warm.client): on a CPU box a stage script hands
itself to a server that has already imported torch, diffusers, transformers and the evaluators, and runs
there in a fresh fork.

Why: on a small CPU box most of a tiny-preset stage is interpreter start-up (`import diffusers` alone
is ~5 s, and the study runs ~60 stage processes). The first stage starts the server
(`python -m dreamsolo.warm.server SOCKET`); it exits after `DREAMSOLO_WARM_IDLE` seconds (default 60)
without a request. Nothing about results changes: the stage script, the library and the params are
read fresh in each fork (only third-party packages are preloaded), the fork gets the client's argv,
working directory, environment and its stdin/stdout/stderr file descriptors, and the client exits
with the stage's status. Signals sent to the client (Ctrl-C, DVC's SIGTERM) are forwarded; if the
client is SIGKILLed, so is the stage.

Off unless all hold: Linux (fork without exec is unsafe on macOS), no NVIDIA device (CUDA cannot be
used in a process forked after the driver was touched, and on a GPU start-up is not what costs),
`DREAMSOLO_WARM` is not `0`. One server per (interpreter, sys.path, package versions, thread env), in
a private 0700 folder; it only serves its own user (SO_PEERCRED).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
import time

PRELOAD = ("torch", "diffusers", "diffusers.optimization", "diffusers.guiders", "transformers", "peft", "mlflow",
           "open_clip", "lpips", "timm", "pandas",
           # what every stage's MLflow logger imports lazily (~0.8 s of CPU per stage otherwise): the
           # SQLite store and its migrations, tracing, GitPython; internal names, so each is optional
           "mlflow.tracking.fluent", "mlflow.store.tracking.sqlalchemy_store",
           "mlflow.store.tracking.sqlalchemy_workspace_store", "mlflow.tracing.provider",
           "mlflow.tracing.processor.otel", "mlflow.tracing.export.utils", "opentelemetry.sdk.trace",
           "sqlalchemy.dialects.sqlite", "alembic.command", "alembic.runtime.migration", "alembic.script",
           "alembic.autogenerate", "alembic.operations", "git", "pyarrow.pandas_compat", "pandas.io.formats.csvs")
# Read by the preloaded packages at import time: a server only serves clients that agree on them.
_FRESH = False  # True in a stage forked by the server, until the stage has run


def fresh_fork() -> bool:
    """True inside a stage forked by the warm server: third-party modules are imported, but no torch
    op has run, so forking again (the MLflow logger) is as safe as in a cold process."""
    return _FRESH


def serve(path: str) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)  # first, so clients can connect (and queue) while the imports run
    sock.listen(64)
    inode = os.stat(path).st_ino
    t = time.perf_counter()
    for name in PRELOAD:
        try:
            __import__(name)
        except Exception as e:  # noqa: BLE001 - a stage that needs it fails there, as it would cold
            print(f"warm: not preloaded: {name} ({e!r})", flush=True)
    if "diffusers" in sys.modules:  # the lazy attributes a stage touches
        from diffusers import (DDPMScheduler, DPMSolverMultistepScheduler, StableDiffusionPipeline,  # noqa: F401
                               UNet2DConditionModel)
    with contextlib.suppress(Exception):  # an internal name: optional
        from transformers.conversion_mapping import get_checkpoint_conversion_mapping

        # transformers 5 compiles its weight-renaming table (~1,000 regexes, ~0.05 s) on a process's
        # first from_pretrained; pure Python (no torch op), so it can be done once here for every fork
        get_checkpoint_conversion_mapping("clip")
    from PIL import Image

    Image.init()  # every image plugin, once, instead of on each stage's first open/save
    print(f"warm: ready in {time.perf_counter() - t:.1f} s, pid {os.getpid()}", flush=True)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # supervisors are reaped by the kernel
    sock.settimeout(float(os.environ.get("DREAMSOLO_WARM_IDLE", "60")))
    while True:
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            break
        with conn:
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            if struct.unpack("3i", creds)[1] != os.getuid():
                continue
            if os.fork() == 0:
                sock.close()
                _supervise(conn)
    with contextlib.suppress(OSError):
        if os.stat(path).st_ino == inode:  # still ours: not replaced by a newer server
            os.unlink(path)


def _supervise(conn: socket.socket) -> None:
    """Forked per request: receive it, fork the stage, report its pid and exit status."""
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    code = 1
    try:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        buf = msg
        while not buf.endswith(b"\n"):
            more = conn.recv(1 << 20)
            if not more:
                raise EOFError("client closed the connection")
            buf += more
        request = json.loads(buf)
        pid = os.fork()
        if pid == 0:
            conn.close()
            _run_stage(request, fds)
        for fd in fds:
            os.close(fd)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        status = _wait(pid, conn)
        conn.sendall(json.dumps({"status": status}).encode() + b"\n")
        code = 0
    finally:
        os._exit(code)


def _wait(pid: int, conn: socket.socket) -> int:
    """waitpid, but kill the stage if the client goes away: a client can only vanish without
    forwarding a signal when it was SIGKILLed, and a cold stage would have died with it."""
    import select

    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        ready, _, _ = select.select([conn], [], [], 0.05)
        if ready and not conn.recv(1, socket.MSG_PEEK):
            os.kill(pid, signal.SIGKILL)
            return os.waitpid(pid, 0)[1]


def _run_stage(request: dict, fds: list[int]) -> None:
    """In the stage's fork: become `python ARGV...` as the client would have run it, then exit."""
    import atexit
    import runpy
    import traceback

    global _FRESH
    _FRESH = True
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ["DREAMSOLO_WARM"] = "0"  # this process and its children run where they are, always
    sys.stdin = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
    sys.argv = request["argv"]
    sys.path[0] = os.path.dirname(sys.argv[0])
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what the interpreter prints for an uncaught exception
        traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    # through the package, so the stages see this module's _FRESH (not a second copy named __main__)
    from dreamsolo.warm.server import serve as _serve

    _serve(sys.argv[1])
