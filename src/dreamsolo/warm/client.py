"""The client side of the warm stage server: a stage script hands itself to the server and exits with
the stage's status (see dreamsolo.warm.server for why and how)."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from dreamsolo.warm.server import fresh_fork

KEY_ENV = ("OMP_", "MKL_", "KMP_", "PYTHON", "HF_", "HUGGINGFACE", "TRANSFORMERS_", "DIFFUSERS_", "TORCH",
           "PYTORCH_", "CUDA_", "TIMM_", "TOKENIZERS_", "DREAMSOLO_WARM")


def switched_on() -> bool:
    """The one switch of dreamsolo.warm: DREAMSOLO_WARM=0 turns the server and the forked logger off."""
    return os.environ.get("DREAMSOLO_WARM", "1") != "0"


def enabled() -> bool:
    if not switched_on() or fresh_fork() or not sys.platform.startswith("linux"):
        return False
    return not any(Path("/dev").glob("nvidia[0-9]*"))


def handoff() -> None:
    """Run this stage script in the warm server and exit with its status; return at once if warm
    mode is off here (or this already is the server's fork)."""
    if not enabled():
        return
    idle = os.environ.get("DREAMSOLO_WARM_IDLE", "60")
    if not idle.replace(".", "", 1).isdigit() or float(idle) <= 0:
        sys.exit(f"error: DREAMSOLO_WARM_IDLE={idle!r}: expected seconds > 0 (or DREAMSOLO_WARM=0 to switch off)")
    for attempt in (1, 2):  # a server may exit for idleness just as we connect: then start another
        try:
            code = _client(_connect())
        except OSError as e:  # nothing has run yet: this process can still do the work itself
            if attempt == 2:
                print(f"dreamsolo: warm server unavailable ({e}); running this stage in a cold process",
                      file=sys.stderr)
                return
            continue
        sys.exit(code)


def _key() -> str:
    from importlib import metadata

    versions = []
    for dist in ("torch", "diffusers", "transformers", "peft", "mlflow", "open_clip_torch", "lpips", "timm"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{dist}={metadata.version(dist)}")
    env = sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(KEY_ENV))
    blob = json.dumps([sys.executable, sys.path[1:], versions, env])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _private_dir() -> Path:
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or "/tmp") / f"dreamsolo-warm-{os.getuid()}"
    base.mkdir(mode=0o700, exist_ok=True)
    st = base.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise OSError(f"{base} is not a private folder of this user")
    return base


def _connect() -> socket.socket:
    folder = _private_dir()
    path = folder / f"{_key()}.sock"
    if len(os.fsencode(path)) > 100:  # AF_UNIX paths stop at 108 bytes
        raise OSError(f"socket path {path} is too long; set XDG_RUNTIME_DIR to a shorter folder")
    with open(folder / f"{path.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one client starts the server; the others wait and connect
        with contextlib.suppress(OSError):
            return _dial(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead server's socket
        log = open(folder / f"{path.stem}.log", "wb")  # noqa: SIM115 - the server keeps it
        server = subprocess.Popen([sys.executable, "-m", "dreamsolo.warm.server", str(path)], stdin=subprocess.DEVNULL,
                                  stdout=log, stderr=log, start_new_session=True, close_fds=True, cwd=folder)
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                return _dial(path)
            if server.poll() is not None:
                raise OSError(f"the warm server exited with {server.returncode} (see {path.with_suffix('.log')})")
            time.sleep(0.02)
        raise OSError(f"the warm server did not open {path} within 30 s (see {path.with_suffix('.log')})")


def _dial(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(str(path))
    except OSError:
        s.close()
        raise
    return s


def _client(conn: socket.socket) -> int:
    """Send the request, forward signals to the stage, return its exit code. Raises OSError only
    while nothing has started, so the caller may run the stage itself."""
    request = {"argv": [os.path.abspath(sys.argv[0]), *sys.argv[1:]], "cwd": os.getcwd(), "env": dict(os.environ)}
    fds = [fd if _is_open(fd) else os.open(os.devnull, os.O_RDWR) for fd in (0, 1, 2)]
    socket.send_fds(conn, [json.dumps(request).encode() + b"\n"], fds)
    pid: list[int] = []
    pending: list[int] = []

    def forward(sig: int, _frame) -> None:
        if pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid[0], sig)
        else:
            pending.append(sig)

    caught = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    before = {sig: signal.signal(sig, forward) for sig in caught}
    try:
        for line in conn.makefile("r"):
            msg = json.loads(line)
            if "status" in msg:
                return _exit_code(msg["status"])
            pid.append(msg["pid"])
            for sig in pending:
                forward(sig, None)
    except OSError:
        if not pid:
            raise
    if pid:
        print("dreamsolo: the warm server went away before the stage finished", file=sys.stderr)
        return 1
    for sig, handler in before.items():
        signal.signal(sig, handler)
    if pending:  # stopped before anything started: do not start it here either
        return 128 + pending[0]
    raise OSError("it closed the connection before starting the stage")


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _exit_code(status: int) -> int:
    if os.WIFSIGNALED(status):  # die of the same signal, as a cold process would have
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return os.waitstatus_to_exitcode(status)
