"""`dreamsolo repro -j N`: the study with N pairs at a time, each stage on its own device, run by DVC.

DVC runs one stage at a time per `dvc repro`, but it unlocks the repository while a stage's command runs
and guards each stage's files with its read/write locks (`.dvc/tmp/rwlock`), so `dvc repro` processes of
stages that write different files can run side by side. Three steps:

1. `dvc repro <shared stages>`: what the pairs read (code, base, priors, arm_inputs), once.
2. Per pair, `dvc --wait-for-lock repro --single-item <its stages, in DVC's order>`, N pairs at a time.
   `--single-item` because without it every process re-checks the shared stages, and DVC takes their
   *write* lock to check them while another pair's stage holds a read lock on them (iterative/dvc#5795).
3. `dvc repro`: what is left (the report), and DVC's own proof that nothing else is stale.

Every stage DVC runs lands in dvc.lock and the run cache as in a plain `dvc repro`; each takes its device
from DREAMSOLO_DEVICES (dreamsolo.devices), which this sets when unset.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from dreamsolo import devices
from dreamsolo.errors import UserError


class ParallelRunError(UserError, RuntimeError):
    """A step failed: names the pair and the log to read."""


@dataclass(frozen=True)
class Plan:
    shared: list[str]  # stages some pair's stage reads, not keyed by a pair
    pairs: dict[str, list[str]]  # pair -> its stages (prepare@p ... evaluate_arm@p-<arm>), dependencies first
    rest: list[str]  # the others (the report)


def pair_of(stage: str, pairs: list[str]) -> str | None:
    """`train_scene@cat_grass` -> cat_grass; an arm's matrix stage `train_arm@cat_grass-joint` too."""
    key = stage.partition("@")[2]
    if key in pairs:
        return key
    found = [p for p in pairs if key.startswith(p + "-")]
    return max(found, key=len) if found else None


def plan(root: Path, pairs: list[str]) -> Plan:
    """Split dvc.yaml's stages by pair from DVC's own graph (edges run from a stage to what it reads);
    names as `dvc repro` takes them in the study root."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        graph = repo.index.graph
        order = list(reversed(list(nx.topological_sort(graph))))  # dependencies first
        keyed = {s: pair_of(s.name, pairs) for s in order}
        upstream = set().union(*(nx.descendants(graph, s) for s, p in keyed.items() if p))
    shared = [s.name for s in order if keyed[s] is None and s in upstream]
    rest = [s.name for s in order if keyed[s] is None and s not in upstream]
    by_pair: dict[str, list[str]] = {p: [] for p in pairs}
    for s in order:
        if keyed[s]:
            by_pair[keyed[s]].append(s.name)
    return Plan(shared, by_pair, rest)


def _dvc(root: Path, args: list[str], log: Path | None = None) -> int:
    """dvc in the study root; its output to the terminal, or to `log`."""
    cmd = ["dvc", *args]
    if log is None:
        return subprocess.run(cmd, cwd=root).returncode
    with open(log, "wb") as out:
        return subprocess.run(cmd, cwd=root, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL).returncode


def log_dir(root: Path) -> Path:
    folder = root / ".dvc" / "tmp" / "dreamsolo-repro"  # DVC's own scratch folder: never tracked
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _last_error(log: Path) -> str:
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith(("ERROR", "error:"))]
    return (errors or lines or ["no output"])[-1][:300]


def run_pairs(root: Path, the_plan: Plan, jobs: int, force: bool = False) -> list[str]:
    """Step 2: each pair's stages in one `dvc repro --single-item`, `jobs` at a time. After a failure no
    new pair starts; the running ones finish (DVC records each finished stage). Returns the pairs run."""
    logs = log_dir(root)
    todo = [p for p, stages in the_plan.pairs.items() if stages]
    stop = threading.Event()

    def one(pair: str) -> int | None:  # None: not started, a pair failed before its turn
        if stop.is_set():
            return None
        args = ["--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), *the_plan.pairs[pair]]
        rc = _dvc(root, args, logs / f"{pair}.log")
        if rc:
            stop.set()
        return rc

    failed: list[str] = []
    with ThreadPoolExecutor(jobs) as pool, tqdm(total=len(todo), desc=f"pairs ({jobs} at a time)", unit="pair") as bar:
        futures = {pool.submit(one, pair): pair for pair in todo}
        for f in as_completed(futures):
            pair, rc = futures[f], f.result()
            if rc is None:
                continue
            failed += [pair] if rc else []
            bar.update(1)
            bar.set_postfix_str(f"{pair} {'FAILED' if rc else 'done'}")
    if failed:
        names = ", ".join(f"{p} ({_last_error(logs / f'{p}.log')}; see {logs / p}.log)" for p in failed)
        raise ParallelRunError(f"dvc repro failed for {names}; the stages that finished are in dvc.lock, "
                               "so running the same command again resumes")
    return todo


def repro(root: Path, pairs: list[str], jobs: int, force: bool = False) -> None:
    """`dreamsolo repro -j N`: steps 1 to 3 (see the module's doc)."""
    if jobs < 1:
        raise UserError(f"-j/--jobs: expected at least 1, got {jobs}")
    slots = devices.set_default(jobs)  # the dvc processes and their stages inherit it
    the_plan = plan(root, pairs)
    print(f"dreamsolo repro: {len(pairs)} pairs, {jobs} at a time, on {devices.ENV}={slots}", file=sys.stderr)
    flags = ["--force"] if force else []
    # (dvc repro with no targets runs the whole study: each step below runs only with its stages)
    if the_plan.shared and _dvc(root, ["repro", *flags, *the_plan.shared]) != 0:
        raise ParallelRunError("dvc repro of the shared stages failed (its output is above)")
    run_pairs(root, the_plan, jobs, force)
    if force and the_plan.rest and _dvc(root, ["repro", "--single-item", "--force", *the_plan.rest]) != 0:
        raise ParallelRunError("dvc repro --force of the report failed (its output is above)")
    if _dvc(root, ["repro"]) != 0:
        raise ParallelRunError("the final dvc repro failed (its output is above)")
