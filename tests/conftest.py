import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N workers share the cores, so each (and every stage process it starts) runs torch on
    # cores // N threads; two 2-thread workers on two cores spend their time waiting for each other
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1)
                                                     // int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")))))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def e2e_template(tmp_path_factory):
    """One `dvc repro` of the two-pair study in a git repo, built once per session and never changed after:
    a test that needs a reproduced study changes a copy of it (studykit.copy_study: seconds, not a repro)."""
    from studykit import E2E_PAIRS, make_study, run

    root = make_study(tmp_path_factory.mktemp("e2e-template") / "study", E2E_PAIRS, git=True)
    out = run(["dvc", "repro"], root)
    return root, out.stdout


@pytest.fixture(scope="session")
def e2e_study(e2e_template, tmp_path_factory):
    """A copy of the reproduced two-pair study, shared (and changed, in file order) by test_e2e.py,
    test_e2e_status.py and test_team.py; with the stdout of the `dvc repro` that built it."""
    from studykit import copy_study

    src, stdout = e2e_template
    return copy_study(src, tmp_path_factory.mktemp("e2e") / "study"), stdout


def pytest_collection_modifyitems(items):
    """Whatever uses the reproduced study is end to end, marked or not (`pytest -m "not e2e"` skips it)."""
    for item in items:
        if "e2e_template" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
