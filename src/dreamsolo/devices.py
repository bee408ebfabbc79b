"""Device leases: with `DREAMSOLO_DEVICES` set, each stage process takes one device of that list for its
whole life, so stages that run at once (`dreamsolo repro -j N`, a sweep's `dvc queue start -j N`, two
terminals) never share one. A lease is an flock on a file in a per-user folder: the kernel releases it
when the process ends, however it ends, so a killed stage leaks no device.

- `DREAMSOLO_DEVICES=0,1,2,3` (or `cuda:0,...`): GPUs. The stage sees only its own (CUDA_VISIBLE_DEVICES).
  A GPU listed twice (`0,0,1,1`) gives two stages at a time on it.
- `DREAMSOLO_DEVICES=cpu:0,cpu:1` (or `cpu:0-3`): sets of CPU cores. The stage's threads are bound to its
  cores and torch runs as many threads as the set has.

An environment variable, not a params key: which device ran a stage is a property of the machine; the
result is the same within float tolerance (bit for bit between devices of one kind and thread count).
Unset, or `none`, nothing changes (`none` also stops `-j N` from setting it). `DREAMSOLO_DEVICE_LOCKS` moves the lease folder (a team's shared box: one
folder everyone can write, so their stages share the devices too).
"""

from __future__ import annotations

import fcntl
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from dreamsolo.errors import UserError

ENV = "DREAMSOLO_DEVICES"
OFF = "none"  # no leases: every stage sees every device (as without the variable)
LOCKS_ENV = "DREAMSOLO_DEVICE_LOCKS"
POLL_S = 0.2


@dataclass(frozen=True)
class Slot:
    kind: str  # "cuda" | "cpu"
    ids: tuple[int, ...]  # GPU index (one), or CPU cores

    @property
    def name(self) -> str:
        if self.kind == "cuda":
            return f"cuda:{self.ids[0]}"
        lo, hi = self.ids[0], self.ids[-1]
        contiguous = self.ids == tuple(range(lo, hi + 1))
        return f"cpu:{lo}-{hi}" if contiguous and hi > lo else "cpu:" + "+".join(map(str, self.ids))


def _ints(spec: str, item: str) -> tuple[int, ...]:
    ids: list[int] = []
    for part in spec.split("+"):
        lo, dash, hi = part.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise UserError(f"{ENV}: {item!r} is not a device (expected 0, cuda:1, cpu:0 or cpu:0-3)")
        ids.extend(range(int(lo), int(hi if dash else lo) + 1))
    if not ids:
        raise UserError(f"{ENV}: {item!r} names no core")
    return tuple(ids)


def parse(raw: str) -> list[Slot]:
    """`0,cuda:1,cpu:0-3,cpu:4+6` -> slots; a bad item is a user error naming it."""
    slots = []
    for item in (s.strip() for s in raw.split(",")):
        kind, _, spec = item.rpartition(":")
        kind = kind or "cuda"
        if kind not in ("cuda", "cpu"):
            raise UserError(f"{ENV}: {item!r}: the kind must be cuda or cpu")
        ids = _ints(spec, item)
        if kind == "cuda" and len(ids) != 1:
            raise UserError(f"{ENV}: {item!r}: a GPU slot is one device (list GPUs apart: 0,1)")
        slots.append(Slot(kind, ids))
    return slots


def lock_names(slots: list[Slot]) -> list[str]:
    """One lock file per slot, by device and occurrence: `0,1` and `1,0` lease the same files."""
    seen: dict[str, int] = {}
    names = []
    for s in slots:
        n = seen[s.name] = seen.get(s.name, -1) + 1
        names.append(f"{s.name.replace(':', '')}-{n}.lock")
    return names


def lock_dir() -> Path:
    base = os.environ.get(LOCKS_ENV)
    folder = Path(base) if base else Path(os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()) / \
        f"dreamsolo-devices-{os.getuid()}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{LOCKS_ENV}: cannot make the device lease folder {folder}: {e.strerror}") from e
    return folder


_held: list[tuple[Slot, IO]] = []  # the lease of this process: the open, locked file keeps it


def held() -> Slot | None:
    return _held[0][0] if _held else None


def claim() -> Slot | None:
    """Take the first free device of DREAMSOLO_DEVICES (waiting while all are busy) and bind this process
    to it; None when the variable is unset. Call before any CUDA work, once per process."""
    raw = os.environ.get(ENV, "").strip()
    if not raw or raw == OFF or _held:
        return held()
    from dreamsolo.distributed import requested, world

    if requested() > 1 or world().size > 1:
        raise UserError(f"{ENV} and DREAMSOLO_NPROC > 1 together: a data-parallel stage uses the devices "
                        "accelerate gives its ranks; unset one of them")
    slots = parse(raw)
    folder = lock_dir()
    waiting = False
    while True:
        for slot, name in zip(slots, lock_names(slots)):
            f = open(folder / name, "a")  # noqa: SIM115 - kept open: the lease lasts while it is
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            _bind(slot)
            _held.append((slot, f))
            return slot
        if not waiting:
            print(f"dreamsolo: all {len(slots)} devices of {ENV} are busy; waiting for one", file=sys.stderr)
            waiting = True
        time.sleep(POLL_S)


def _bind(slot: Slot) -> None:
    if slot.kind == "cuda":
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            raise RuntimeError("devices.claim() after CUDA started: the lease must come first")
        os.environ["CUDA_VISIBLE_DEVICES"] = str(slot.ids[0])
        return
    try:
        os.sched_setaffinity(0, slot.ids)
    except OSError as e:
        raise UserError(f"{ENV}: {slot.name}: this machine cannot run on those cores ({e.strerror}; "
                        f"it has {sorted(os.sched_getaffinity(0))})") from e
    n = str(len(slot.ids))
    os.environ.update(OMP_NUM_THREADS=n, MKL_NUM_THREADS=n)  # for a torch not imported yet
    if "torch" in sys.modules:  # a warm fork: torch is in, its pool is resized
        sys.modules["torch"].set_num_threads(len(slot.ids))


def check_gpu(cuda_available: bool) -> None:
    """A GPU lease on a process torch sees no GPU in is a user error, not a silent CPU run."""
    slot = held()
    if slot is not None and slot.kind == "cuda" and not cuda_available:
        raise UserError(f"{ENV} gave this stage {slot.name}, but torch sees no GPU there "
                        f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')})")


def set_default(jobs: int) -> str:
    """DREAMSOLO_DEVICES for this process and its children (`dreamsolo repro -j N`, `dreamsolo sweep -j N`):
    the user's, checked, or else `default_for(jobs)`."""
    raw = os.environ.get(ENV, "").strip() or default_for(jobs)
    if raw != OFF:
        parse(raw)  # a bad list stops here, before any stage
    os.environ[ENV] = raw
    return raw


def default_for(jobs: int) -> str:
    """What `dreamsolo repro -j N` sets when DREAMSOLO_DEVICES is unset: every GPU torch sees, or the
    CPU cores of this process split into N sets (N workers of one thread each on N cores)."""
    import torch

    if torch.cuda.is_available():
        return ",".join(str(i) for i in range(torch.cuda.device_count()))
    cores = sorted(os.sched_getaffinity(0))
    if jobs > len(cores):
        raise UserError(f"-j {jobs}: this machine gives this process {len(cores)} CPU cores; set "
                        f"{ENV} (cpu:0,cpu:0,... shares a core) to run more at once")
    size = len(cores) // jobs
    sets = [cores[i * size:(i + 1) * size] for i in range(jobs)]
    sets[-1] += cores[jobs * size:]
    return ",".join(Slot("cpu", tuple(s)).name for s in sets)
