"""Running a sweep through DVC's experiment queue: each point is `dvc exp run --queue -n <name> -S ...
evaluate@<pair>...`, the queue runs them `-j N` at a time (`dvc queue start`), and a point whose
experiment already exists on this commit is not queued again. Stages whose inputs a point does not
change are skipped (dvc.lock) or restored from DVC's run cache, as in any `dvc exp run`."""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from dreamsolo.errors import UserError
from dreamsolo.sweeps.spec import Point, Sweep
from dreamsolo.tracking import tracking_uri

POLL_S = 5.0


class SweepRunError(UserError, RuntimeError):
    """DVC refused to queue a point, or points failed: names them and where their logs are."""


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["dvc", *args], cwd=root, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise SweepRunError(f"dvc {' '.join(args[:3])} ... failed ({proc.returncode}): "
                            f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")
    return proc


def declared_params(root: Path) -> set[str]:
    """Every params key a stage of dvc.yaml depends on (templating resolved, as DVC resolves it)."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return {k for st in repo.index.stages for d in st.deps if isinstance(d, ParamsDependency)
                for k in (d.params or [])}


def finished(root: Path) -> set[str]:
    """Names of the experiments of the current commit (a finished experiment has a git ref)."""
    out = dvc(root, "exp", "list", "--name-only").stdout
    return {line.strip() for line in out.splitlines() if line.strip()}


def queue_tasks(root: Path) -> dict[str, dict]:
    """name -> DVC's task record (status Queued | Running | Success | Failed, and its stash rev)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        tasks = [t for t in repo.experiments.celery_queue.status() if t.get("name")]
    # a name queued again keeps its old task's record too: the newest task is the point's state
    tasks.sort(key=lambda t: str(t.get("timestamp") or ""))
    return {t["name"]: t for t in tasks}


def queue_states(root: Path) -> dict[str, str]:
    return {name: t["status"] for name, t in queue_tasks(root).items()}


def _running(pid_file: Path, marker: bytes) -> bool:
    """Whether the process a dvc-task pid file names is alive and still that process (pids are reused:
    its command line is checked where /proc exists)."""
    try:
        info = json.loads(pid_file.read_text())
        pid = int(info["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if info.get("returncode") is not None:
        return False
    if not Path("/proc").is_dir():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        return True
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def worker_pid_files(root: Path) -> list[Path]:
    """The pid files `dvc queue start` leaves, one per worker it spawned (dvc_task's ManagedProcess)."""
    return sorted((root / ".dvc/tmp/exps/celery").glob("dvc-exp-worker-*.json"))


def live_workers(root: Path) -> int:
    """DVC's queue workers of this repo that are alive, from their pid files. Not celery's `inspect`: a
    busy worker may not answer it (dvc#10427), and a dead one never does."""
    return sum(_running(f, b"queue-worker") for f in worker_pid_files(root))


def orphaned(root: Path, task: dict) -> bool:
    """With no worker alive: a task DVC shows as Running whose `dvc exp exec-run` is not running either. A
    worker killed mid-point leaves it so for ever (its message was taken, its result never comes)."""
    rev = str(task.get("rev") or "")
    return task.get("status") == "Running" and not _running(root / ".dvc/tmp/exps/run" / rev / f"{rev}.json",
                                                             b"exec-run")


@dataclass
class Progress:
    total: int
    done: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    pending: set[str] = field(default_factory=set)


def plan(root: Path, sweep: Sweep) -> Progress:
    """What is done (an experiment exists), queued or running (leave it), failed or missing (queue it)."""
    names = {p.name for p in sweep.points}
    done = finished(root) & names
    states = queue_states(root)
    waiting = {n for n in names - done if states.get(n) in ("Queued", "Running")}
    return Progress(total=len(names), done=done, pending=waiting)


def _queue(root: Path, point: Point, targets: list[str]) -> None:
    args = ["exp", "run", "--queue", "-n", point.name]
    for s in point.set_params():
        args += ["-S", s]
    dvc(root, *args, *targets)


def queue_missing(root: Path, sweep: Sweep, progress: Progress) -> list[Point]:
    todo = [p for p in sweep.points if p.name not in progress.done | progress.pending]
    states = queue_states(root) if todo else {}
    for point in tqdm(todo, desc=f"queue {sweep.name}", unit="point", disable=not todo):
        if states.get(point.name) in ("Failed", "Success"):  # an old task of this name: forget it first
            dvc(root, "queue", "remove", point.name, check=False)
        _queue(root, point, sweep.targets)
        progress.pending.add(point.name)
    return todo


def worker_env(root: Path, jobs: int = 1) -> dict[str, str]:
    """The queue's workers run each point in a copy of the repo under .dvc/tmp/exps: MLflow must log
    to this study's store, not to a SQLite file inside that copy. N workers share the cores: each
    stage gets cores // N threads unless OMP_NUM_THREADS says otherwise (two 2-thread trainings on
    2 cores ran 2-20x slower than one, from thread contention)."""
    env = dict(os.environ)
    env.setdefault("MLFLOW_TRACKING_URI", tracking_uri(root.resolve()))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // jobs)))
    return env


def ensure_store(uri: str) -> None:
    """Create a new local SQLite store's tables now, in this one process. MLflow migrates a database on first
    use: two workers' first stages on a fresh study both migrated it at once, and one failed with
    "duplicate column name"."""
    if not uri.startswith("sqlite:///") or Path(uri[len("sqlite:///"):]).is_file():
        return
    from mlflow.tracking import MlflowClient

    MlflowClient(uri).search_experiments(max_results=1)


def _start_workers(root: Path, jobs: int) -> None:
    """`dvc queue start -j N`. Its workers outlive it and inherit its output: a pipe would make us wait
    for them, so the output goes to a file (read back if the start itself fails)."""
    env = worker_env(root, jobs)
    ensure_store(env["MLFLOW_TRACKING_URI"])  # the workers' first stages would each migrate a new store at once
    log = root / ".dvc" / "tmp" / "dreamsolo-queue-start.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as fh:
        rc = subprocess.run(["dvc", "queue", "start", "-j", str(jobs)], cwd=root, env=env,
                            stdout=fh, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SweepRunError(f"dvc queue start -j {jobs} failed ({rc}): {log.read_text().strip()[-500:]}")


def _requeue_lost(root: Path, sweep: Sweep, progress: Progress, tasks: dict[str, dict], requeued: set[str]) -> None:
    """No worker is alive: queue again each waiting point whose worker died under it (once: a second loss
    fails the point)."""
    points = {p.name: p for p in sweep.points}
    for name in sorted(n for n in progress.pending if orphaned(root, tasks.get(n, {}))):
        if name in requeued:
            progress.pending.discard(name)
            progress.failed.add(name)
            continue
        tqdm.write(f"sweep {sweep.name}: {name}: its queue worker died while running it; queued again")
        # DVC marks a task whose process is gone as failed on `queue kill` (else `dvc exp show` keeps reading
        # its half-removed run folder); then the failed task is forgotten, as queue_missing does
        rev = str(tasks[name]["rev"])
        dvc(root, "queue", "kill", rev, check=False)
        dvc(root, "queue", "remove", rev, check=False)
        _queue(root, points[name], sweep.targets)
        requeued.add(name)


def run_queue(root: Path, sweep: Sweep, progress: Progress, jobs: int) -> Progress:
    """Start `jobs` workers and wait, with a progress bar of points done / total (tqdm's ETA)."""
    names = {p.name for p in sweep.points}
    if progress.pending:
        _start_workers(root, jobs)
    bar = tqdm(total=progress.total, initial=len(progress.done), desc=f"sweep {sweep.name}", unit="point")
    no_worker, requeued = 0, set()
    with bar:
        while progress.pending:
            time.sleep(POLL_S)
            tasks = queue_tasks(root)
            # no worker alive for three polls while points wait: DVC's workers can stop with tasks queued (a
            # stale `dvc queue stop` in its broker), or die mid-point (that task shows Running for ever)
            no_worker = no_worker + 1 if live_workers(root) == 0 else 0
            if no_worker >= 3:
                _requeue_lost(root, sweep, progress, tasks, requeued)
                tasks = queue_tasks(root)
                if progress.pending:
                    _start_workers(root, jobs)
                no_worker = 0
            states = {n: t["status"] for n, t in tasks.items()}
            now_done = {n for n in progress.pending if states.get(n) == "Success"}
            now_failed = {n for n in progress.pending if states.get(n) == "Failed" or n not in states}
            if now_done:  # Success in the queue and a ref in git: count it once the ref exists
                now_done &= finished(root)
            progress.done |= now_done
            progress.failed |= now_failed - now_done
            progress.pending -= now_done | now_failed
            bar.update(len(now_done))
            bar.set_postfix(failed=len(progress.failed), running=sum(states.get(n) == "Running" for n in names))
    return progress


def run_sweep(root: Path, sweep: Sweep, jobs: int = 1) -> Progress:
    progress = plan(root, sweep)
    queued = queue_missing(root, sweep, progress)
    print(f"sweep {sweep.name}: {len(sweep.points)} points on {len(sweep.pairs)} pair(s); "
          f"{len(progress.done)} done, {len(queued)} queued now, "
          f"{len(progress.pending) - len(queued)} already queued", flush=True)
    run_queue(root, sweep, progress, jobs)
    if progress.failed:
        names = sorted(progress.failed)
        raise SweepRunError(f"sweep {sweep.name}: {len(names)} point(s) failed: {', '.join(names)} "
                            f"(their logs: dvc queue logs {names[0]}); run the sweep again to retry them")
    return progress
