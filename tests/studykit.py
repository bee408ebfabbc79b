"""Build small, fast copies of the study in a temporary folder for stage and end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from dreamsolo.config import ParamsError, load_study
from dreamsolo.params import dump_yaml, read_yaml

REPO = Path(__file__).resolve().parents[1]
E2E_PAIRS = ["cat_grass", "cat_brick"]  # the end-to-end study: they share the class `cat` (one priors stage)
E2E_CLASSES = ["cat", "grass", "brick"]
TOY_PAIR = "cat_grass"  # the toy default's one-pair study (conftest.toy_template): the method's claims
# the study's sampling settings (FAST cuts them for the plumbing tests): the claims need several seeds
TOY: dict[str, Any] = {"model.preset": "toy", "priors.num_images": 8, "priors.steps": 20, "priors.batch_size": 8,
                       "sample.num_images": 4, "sample.steps": 20, "sample.batch_size": 8}
COPY = ["params.yaml", "dvc.yaml", "stages", "src", ".dvc/config", ".dvcignore", "bench", "tools", "data/base",
        "data/evaluators",  # the toy preset's trained CLIP and DINO (evaluate depends on them)
        "fingerprints",  # the code stage's outputs (tools/code_deps.py)
        "reports/arms/README.md", "data/samples_arms/README.md"]  # the READMEs keep folders `report` depends on
# the findings' sweeps (`report` depends on their folders): not run in a test study, whatever the repo has
NOT_RUN = ["reports/sweeps/lr_steps_all", "reports/sweeps/prior_weight"]

# Few steps and images on the random `tiny` preset: these tests check plumbing and bookkeeping, not
# image quality (the method itself is tested on `toy`: tests/test_method.py).
FAST: dict[str, Any] = {
    "model.preset": "tiny",
    "presets.tiny.train_steps": 4,
    "priors.num_images": 2,
    "priors.steps": 3,
    "priors.batch_size": 2,
    "sample.num_images": 2,
    "sample.steps": 3,
    "train.log_every": 2,
    "prompts.recontext": ["a photo of {instance} in {scene} at night"],
}


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op thread count set to n for the block (bit-identity needs one thread count)."""
    import torch

    before = torch.get_num_threads()
    # under `pytest -n N` (conftest) a worker owns cores // N: never more threads than that
    torch.set_num_threads(min(n, int(os.environ.get("OMP_NUM_THREADS") or n)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def set_key(params: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value


def edit_params(root: Path, edits: dict[str, Any]) -> None:
    path = root / "params.yaml"
    params = read_yaml(path)  # as DVC and the stages read it; dump_yaml writes what reads back the same
    for dotted, value in edits.items():
        set_key(params, dotted, value)
    path.write_text(dump_yaml(params))


def _link_or_copy(src: str, dst: str) -> None:
    """Weight files hard-linked where possible (no test writes them); everything else copied."""
    if src.endswith(".safetensors"):
        with contextlib.suppress(OSError):
            os.link(src, dst)
            return
    shutil.copy2(src, dst)


def make_study(dest: Path, pairs: list[str], edits: dict[str, Any] | None = None, git: bool = False) -> Path:
    """A study root with only `pairs` (their folders and params entries) and the FAST settings."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPY:
        src = REPO / name
        if src.is_dir():  # data/base's weights (tens of MB, never written by a test): hard links where
            # possible; the rest is copied, as tests edit code, params and files in their copy
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__", "out"),
                            copy_function=_link_or_copy if name.startswith("data/") else shutil.copy2)
        elif src.exists():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for name in NOT_RUN:
        (dest / name).mkdir(parents=True)
        (dest / name / "README.md").write_text("Not run in this test study.\n")
    params = read_yaml(dest / "params.yaml")
    params["pairs"] = {p: params["pairs"][p] for p in pairs}
    used = {c for p in params["pairs"].values() for c in (p["scene_class"], p["instance_class"])}
    params["classes"] = {c: n for c, n in params["classes"].items() if c in used}
    (dest / "params.yaml").write_text(dump_yaml(params))
    edit_params(dest, {**FAST, **(edits or {})})
    (dest / "data/pairs").mkdir(parents=True, exist_ok=True)
    for p in pairs:
        shutil.copytree(REPO / "data/pairs" / p, dest / "data/pairs" / p)
    if git:
        run(["git", "init", "-q"], dest)
        run(["git", "add", "-A"], dest)
        run(["git", "commit", "-qm", "study"], dest)
    return dest


def copy_study(src: Path, dest: Path) -> Path:
    """A copy of a (reproduced) study: git repo, DVC cache and MLflow store included. Far cheaper than a
    `dvc repro`; for tests that change a study another test built. The store's artifact locations are
    absolute paths: they are moved to the copy, so its runs never write into `src`."""
    import sqlite3

    shutil.copytree(src, dest, symlinks=True)
    db = dest / "mlflow.db"
    if db.is_file():
        old, new = f"{src.as_posix()}/", f"{dest.as_posix()}/"
        con = sqlite3.connect(db)
        try:
            tables = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
            for table, column in (("experiments", "artifact_location"), ("runs", "artifact_uri"),
                                  ("logged_models", "artifact_location")):
                if table in tables:
                    con.execute(f"update {table} set {column} = replace({column}, ?, ?)", (old, new))
            con.commit()
        finally:
            con.close()
    return dest


def env(root: Path) -> dict[str, str]:
    e = {k: v for k, v in os.environ.items() if k not in ("DREAMSOLO_ROOT", "MLFLOW_TRACKING_URI")}
    e.update(GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t",
             DVC_NO_ANALYTICS="1", PYTHONWARNINGS="ignore")
    return e


def ran(stdout: str) -> set[str]:
    """The stages a `dvc repro` ran, from its output."""
    return set(re.findall(r"Running stage '([^']+)'", stdout))


def repro_output(root: Path, proc) -> str:
    """What `dreamsolo repro -j N` printed, and what its per-pair `dvc repro` processes wrote to their logs
    (dreamsolo.parallel rewrites them each run)."""
    logs = sorted((root / ".dvc/tmp/dreamsolo-repro").glob("*.log"))
    return proc.stdout + proc.stderr + "".join(p.read_text() for p in logs)


def run(cmd: list[str], root: Path, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=root, env=env(root), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


CHAIN = ("base", "prepare", "generate_priors", "train_scene", "train_instance", "sample", "sample_base",
         "evaluate", "report")


def run_chain(study, pair: str, through: str = "generate_priors", classes=None) -> dict[str, object]:
    """The stage functions in pipeline order for one pair, in-process, up to and including `through`;
    priors for `classes` (default: the pair's two classes). Returns each stage's result by name.
    MLFLOW_TRACKING_URI must point at a throwaway store."""
    from functools import partial

    from dreamsolo.stages import base, evaluate, generate_priors, prepare, report, sample, train

    fns = {"base": lambda: base.run(study), "prepare": partial(prepare.run, study, pair),
           "train_scene": partial(train.run, study, pair, "train_scene"),
           "train_instance": partial(train.run, study, pair, "train_instance"),
           "sample": partial(sample.run, study, pair), "sample_base": partial(sample.run_base, study, pair),
           "evaluate": partial(evaluate.run, study, pair), "report": lambda: report.run(study)}
    p = study.pair(pair)
    classes = list(dict.fromkeys(classes or (p.scene_class, p.instance_class)))
    fns["generate_priors"] = lambda: [generate_priors.run(study, c) for c in classes]
    out = {}
    for name in CHAIN[: CHAIN.index(through) + 1]:
        out[name] = fns[name]()
    return out


# --- reading a study's MLflow store back (end-to-end tests) ---

def mlflow_client(root: Path):
    from mlflow.tracking import MlflowClient

    from dreamsolo import tracking

    client = MlflowClient(f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    exp = client.get_experiment_by_name(tracking.EXPERIMENT)
    assert exp is not None, "no MLflow experiment"
    return client, exp.experiment_id


def load_table(root: Path, name: str, run_id: str):
    """The run's MLflow table (MlflowClient.load_table searches through the global URI: set it here)."""
    import mlflow

    client, exp_id = mlflow_client(root)
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{(root / 'mlflow.db').as_posix()}")
    try:
        return client.load_table(exp_id, name, run_ids=[run_id])
    finally:
        mlflow.set_tracking_uri(before)


def current_runs(runs) -> dict:
    """{dvc_stage: newest FINISHED run not superseded} - what the workspace outputs came from."""
    out: dict = {}
    for r in sorted(runs, key=lambda r: r.info.start_time):
        if r.info.status == "FINISHED" and "superseded_by" not in r.data.tags and r.data.tags.get("dvc_stage"):
            out[r.data.tags["dvc_stage"]] = r
    return out


def artifact_paths(client, run_id: str, path: str = "") -> set[str]:
    out: set[str] = set()
    for a in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, a.path) if a.is_dir else {a.path}
    return out


# params.yaml edits checked by load_study alone (test_params, test_presets)
DELETE = object()


def study_with(tmp_path: Path, edits: dict[str, Any], pairs: list[str] | None = None) -> Path:
    """A copy of params.yaml (optionally only some pairs) on the `tiny` preset, edited; returns the root."""
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    if pairs is not None:
        params["pairs"] = {p: params["pairs"][p] for p in pairs}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if not (tmp_path / "data/evaluators").exists():  # the toy preset's weight files must exist
        (tmp_path / "data").mkdir(exist_ok=True)
        (tmp_path / "data/evaluators").symlink_to(REPO / "data/evaluators")
    edit_params(tmp_path, {"model.preset": "tiny", **{k: v for k, v in edits.items() if v is not DELETE}})
    for dotted in (k for k, v in edits.items() if v is DELETE):
        params = yaml.safe_load((tmp_path / "params.yaml").read_text())
        *parents, last = dotted.split(".")
        node = params
        for key in parents:
            node = node[key]
        del node[last]
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def error_of(tmp_path: Path, edits: dict[str, Any], pairs: list[str] | None = None,
             exc: type[Exception] = ParamsError) -> str:
    with pytest.raises(exc) as err:
        load_study(study_with(tmp_path, edits, pairs))
    msg = str(err.value)
    assert "\n" not in msg, f"not one line: {msg!r}"
    return msg
