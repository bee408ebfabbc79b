import os
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores, so each (and every stage process it starts) runs torch on
    # cores // N threads; two 2-thread workers on two cores spend their time waiting for each other
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))


import pytest  # noqa: E402


def _built_once(tmp_path_factory, name: str, build) -> Path:
    """`build(folder)` run once per session, whichever worker asks first: under xdist the workers share one
    build through a file lock in the session's common temp folder, as pytest-xdist's docs advise for
    session data. `folder/done` is written last: a build that died half way is redone from scratch."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the folder all workers' base temps live in, this session's own
    home = shared / name
    with FileLock(str(home) + ".lock"):
        if not (home / "done").is_file():
            shutil.rmtree(home, ignore_errors=True)
            home.mkdir()
            build(home)
            (home / "done").touch()
    return home


@pytest.fixture(scope="session")
def e2e_template(tmp_path_factory):
    """One `dvc repro` of the two-pair study in a git repo, built once per session and never changed after:
    a test that needs a reproduced study changes a copy of it (studykit.copy_study: seconds, not a repro).
    Seven files use it; each xdist worker used to build its own."""
    from studykit import E2E_PAIRS, make_study, run

    def build(home: Path) -> None:
        root = make_study(home / "study", E2E_PAIRS, git=True)
        (home / "repro.stdout").write_text(run(["dvc", "repro"], root).stdout)

    home = _built_once(tmp_path_factory, "e2e-template", build)
    return home / "study", (home / "repro.stdout").read_text()


@pytest.fixture(scope="session")
def toy_template(tmp_path_factory):
    """cat_grass on the toy default through `evaluate`, in-process (run_chain, no DVC), with the study's
    sampling settings (studykit.TOY): the method's claims (test_method) and the evaluations in training
    (test_step_evals) start from copies of it. Never changed after it is built."""
    from studykit import TOY, TOY_PAIR, make_study, run_chain, torch_threads

    from dreamsolo.config import load_study

    def build(home: Path) -> None:
        root = make_study(home / "study", [TOY_PAIR], TOY)
        mp = pytest.MonkeyPatch()
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
        try:
            with torch_threads(2):
                run_chain(load_study(root), TOY_PAIR, through="evaluate")
        finally:
            mp.undo()

    return _built_once(tmp_path_factory, "toy-template", build) / "study"


@pytest.fixture(scope="session")
def e2e_study(e2e_template, tmp_path_factory):
    """A copy of the reproduced two-pair study, shared (and changed, in file order) by test_e2e.py,
    test_e2e_status.py and test_team.py; with the stdout of the `dvc repro` that built it."""
    from studykit import copy_study

    src, stdout = e2e_template
    return copy_study(src, tmp_path_factory.mktemp("e2e") / "study"), stdout


# The slowest files first (CI's --durations, issue 25), so two workers finish together instead of one
# running the last long file alone; pyproject turns off xdist's own order (files with most tests first).
# test_e2e leads: it builds the shared reproduced study while the other worker runs the rehearsal.
# test_e2e, test_e2e_status and test_team keep their order: they change one copy of the study in turn.
SLOWEST_FIRST = ("test_e2e.py", "test_rehearsal.py", "test_arms.py", "test_method.py", "test_e2e_status.py",
                 "test_team.py", "test_resume.py", "test_sweeps.py", "test_sdxl.py", "test_hub_offline.py",
                 "test_distributed.py", "test_warm.py", "test_determinism.py", "test_step_evals.py",
                 "test_parallel.py", "test_sine.py", "test_refusals.py")


def pytest_collection_modifyitems(items):
    """Whatever uses the reproduced study is end to end, marked or not (`pytest -m "not e2e"` skips it).
    Then the slowest files first, the others after them in their usual order (a stable sort)."""
    for item in items:
        if {"e2e_template", "toy_template"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
