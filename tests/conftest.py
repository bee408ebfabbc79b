import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def e2e_study(tmp_path_factory):
    """One `dvc repro` of the two-pair study in a git repo, shared by the end-to-end test files."""
    from studykit import E2E_PAIRS, make_study, run

    root = make_study(tmp_path_factory.mktemp("e2e") / "study", E2E_PAIRS, git=True)
    out = run(["dvc", "repro"], root)
    return root, out.stdout
