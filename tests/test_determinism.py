"""Same params, same bytes: two mini studies (one in this process, one in a fresh one) train and sample
to identical weights and PNGs. And a `sample` run that crashes leaves nothing behind and reruns cleanly."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from studykit import env, make_study, run_chain, torch_threads

PAIR = "cat_grass"
THREADS = 1  # both runs alike (a thread count may change float reduction order); also fastest on 2 cores


def chain_to_sample(root: Path) -> None:
    """Every stage up to `sample` for PAIR, in-process (MLFLOW_TRACKING_URI must be set)."""
    from dreamsolo.config import load_study

    study = load_study(root)
    pair = study.pair(PAIR)
    run_chain(study, PAIR, through="sample", classes=sorted({pair.scene_class, pair.instance_class}))


def digests(root: Path) -> dict[str, str]:
    """sha256 of every weight file, prior latent and sample file the chain wrote."""
    files = [*root.glob("models/**/*.safetensors"), *root.glob("data/priors/**/*.safetensors"),
             *root.glob(f"data/samples/{PAIR}/*")]
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(files)}


@pytest.fixture(scope="module", autouse=True)
def threads():
    """Every in-process run of this module uses THREADS, like the subprocess."""
    with torch_threads(THREADS):
        yield


@pytest.fixture(scope="module")
def studies(tmp_path_factory, threads) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("determinism")
    a = make_study(base / "a", [PAIR])
    b = make_study(base / "b", [PAIR])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(base / 'a.db').as_posix()}")
        mp.chdir(a)
        chain_to_sample(a)
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); " \
           "from pathlib import Path; from test_determinism import chain_to_sample; chain_to_sample(Path.cwd())"
    e = {**env(b), "MLFLOW_TRACKING_URI": f"sqlite:///{(base / 'b.db').as_posix()}",
         "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=b, env=e, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return a, b


@pytest.mark.e2e
def test_two_studies_give_identical_weights_and_samples(studies):
    a, b = studies
    da, db = digests(a), digests(b)
    kinds = {k.split("/")[0] for k in da}
    assert kinds == {"models", "data"}
    assert any(k.startswith(f"models/{PAIR}/scene/") for k in da)
    assert any(k.startswith(f"models/{PAIR}/instance/") for k in da)
    assert sum(k.endswith(".png") for k in da if k.startswith("data/samples")) >= 4
    assert da.keys() == db.keys()
    differ = [k for k in da if da[k] != db[k]]
    assert not differ, f"{len(differ)} files differ between identical runs, e.g. {differ[:3]}"
    for role in ("scene", "instance"):
        log = f"models/{PAIR}/{role}/train_log.csv"
        assert (a / log).read_text() == (b / log).read_text()
    manifest = f"data/samples/{PAIR}/manifest.csv"
    assert (a / manifest).read_bytes() == (b / manifest).read_bytes()


def _leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".tmp" in p.name or ".old-" in p.name]


@pytest.mark.e2e
def test_a_crashed_sample_leaves_nothing_and_reruns_cleanly(studies, tmp_path, monkeypatch):
    from dreamsolo import sampling
    from dreamsolo.config import load_study
    from dreamsolo.stages.sample import run as sample_pair

    a, _ = studies
    root = tmp_path / "study"
    shutil.copytree(a, root, ignore=shutil.ignore_patterns("mlruns"))
    out = root / "data" / "samples" / PAIR
    shutil.rmtree(out)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}")
    monkeypatch.chdir(root)
    real_save = sampling.save_images

    def crash_after_writing(images, folder, *args, **kwargs):
        real_save(images, folder, *args, **kwargs)
        assert list(Path(folder).glob("*.png")), "nothing written before the crash"
        raise RuntimeError("simulated crash after the images were written")

    monkeypatch.setattr(sampling, "save_images", crash_after_writing)
    study = load_study(root)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample_pair(study, PAIR)
    assert not out.exists(), "a crashed sample run left a (partial) output folder"
    assert not _leftovers(root / "data"), _leftovers(root / "data")

    monkeypatch.setattr(sampling, "save_images", real_save)
    assert sample_pair(study, PAIR) == out
    assert not _leftovers(root / "data")
    want = {p.name: p.read_bytes() for p in (a / "data/samples" / PAIR).iterdir()}
    got = {p.name: p.read_bytes() for p in out.iterdir()}
    assert got.keys() == want.keys() and all(got[k] == want[k] for k in want), "rerun differs from the first run"

    # a crash over an existing output keeps the old output whole
    monkeypatch.setattr(sampling, "save_images", crash_after_writing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sample_pair(study, PAIR)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == got
    assert not _leftovers(root / "data")

    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("dreamsolo")
    runs = client.search_runs([exp.experiment_id], "tags.stage = 'sample'")
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED", "FINISHED"]
