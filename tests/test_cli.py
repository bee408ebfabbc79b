"""The `dreamsolo sample` command (issue 6): ad-hoc images from a trained pair, outside the pipeline's outputs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from studykit import make_study, run, run_chain

PAIR = "cat_grass"
PROMPT = "a photo of <S> cat in <V> grass field"


def _cli() -> list[str]:
    """The installed `dreamsolo` console script of this interpreter's environment."""
    script = Path(sys.executable).parent / "dreamsolo"
    return [str(script)] if script.is_file() else [sys.executable, "-c", "from dreamsolo.cli import main; main()"]


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A one-pair study with both training stages run (in-process stage functions)."""
    from dreamsolo.config import load_study

    root = make_study(tmp_path_factory.mktemp("cli") / "study", [PAIR])
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    study = load_study(root)
    run_chain(study, PAIR, through="train_instance")
    samples = root / "data/samples" / PAIR  # as `sample@<pair>` leaves it: the command must not touch it
    samples.mkdir(parents=True)
    (samples / "manifest.csv").write_text("file,kind,prompt,prompt_clean,seed\n")
    Image.new("RGB", (64, 64)).save(samples / "0000.png")
    yield study
    mp.undo()


@pytest.mark.e2e
def test_sample_command_writes_n_images_outside_data(trained):
    root = trained.root
    data_before, models_before = _tree(root / "data"), _tree(root / "models")
    proc = run([*_cli(), "sample", "--pair", PAIR, "--prompt", PROMPT, "--n", "3", "--seed", "0"], root, timeout=300)
    folder = root / "samples-adhoc" / PAIR
    pngs = sorted(folder.glob("*.png"))
    assert len(pngs) == 3
    assert sorted(Path(line) for line in proc.stdout.split()) == pngs
    record = json.loads((folder / "adhoc.json").read_text())
    assert set(record) == {p.name for p in pngs}
    for entry in record.values():
        assert entry["prompt"] == "a photo of sks cat in olis grass field"  # the pair's identifiers, substituted
        assert entry["template"] == PROMPT and entry["weights"] == f"models/{PAIR}/instance"
    assert sorted(e["seed"] for e in record.values()) == [0, 1, 2]
    assert _tree(root / "data") == data_before, "data/ (samples included) must be untouched"
    assert _tree(root / "models") == models_before
    images = [_pixels(p) for p in pngs]
    assert all(im.shape == (64, 64, 3) for im in images)
    assert np.abs(images[0] - images[1]).max() > 0, "seeds 0 and 1 gave the same image"


@pytest.mark.e2e
def test_seeds_change_images_and_the_same_seed_repeats(trained, tmp_path, monkeypatch, capsys):
    from dreamsolo.cli import main

    monkeypatch.chdir(trained.root)
    main(["sample", "--pair", PAIR, "--prompt", PROMPT, "--n", "2", "--seed", "0", "--out", str(tmp_path / "a")])
    main(["sample", "--pair", PAIR, "--prompt", PROMPT, "--n", "2", "--seed", "100", "--out", str(tmp_path / "b")])
    a, b = sorted((tmp_path / "a").glob("*.png")), sorted((tmp_path / "b").glob("*.png"))
    assert len(a) == len(b) == 2
    assert all(np.abs(_pixels(x) - _pixels(y)).max() > 0 for x, y in zip(a, b)), "other seeds, same images"
    # seed 0 again (other folder, other batch): the image of the subprocess run, exactly
    first = trained.root / "samples-adhoc" / PAIR / a[0].name
    if first.is_file():
        assert np.array_equal(_pixels(first), _pixels(a[0]))
    main(["sample", "--pair", PAIR, "--prompt", "<V> grass field", "--n", "1", "--stage", "scene",
          "--out", str(tmp_path / "scene")])
    (entry,) = json.loads((tmp_path / "scene/adhoc.json").read_text()).values()
    assert entry["prompt"] == "olis grass field" and entry["weights"] == f"models/{PAIR}/scene"
    capsys.readouterr()


@pytest.mark.e2e
def test_unknown_pair_exits_1_with_one_line(trained):
    proc = run([*_cli(), "sample", "--pair", "cat_grasss", "--prompt", PROMPT], trained.root, check=False, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: pairs.cat_grasss: no such pair") and "cat_grass" in lines[0]
    assert proc.stdout == ""


@pytest.mark.parametrize("args, message", [
    (["--out", "data/samples/x"], "inside the study's data/"),
    (["--out", "models/mine"], "inside the study's models/"),
    (["--n", "0"], "--n must be > 0"),
])
@pytest.mark.e2e
def test_bad_arguments_exit_1_and_write_nothing(trained, monkeypatch, capsys, args, message):
    from dreamsolo.cli import main

    monkeypatch.chdir(trained.root)
    before = _tree(trained.root / "data"), _tree(trained.root / "models")
    with pytest.raises(SystemExit) as e:
        main(["sample", "--pair", PAIR, "--prompt", PROMPT, *args])
    assert e.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert (_tree(trained.root / "data"), _tree(trained.root / "models")) == before


def test_ui_without_a_store_says_so_and_creates_none(tmp_path):
    root = make_study(tmp_path / "s", [PAIR])
    proc = run([*_cli(), "ui"], root, check=False)
    assert proc.returncode == 1 and "no MLflow store at" in proc.stderr and "dvc repro" in proc.stderr, proc.stderr
    assert not (root / "mlflow.db").exists()
