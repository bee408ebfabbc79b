"""Each stage on the tiny model, in-process, on a one-pair study (outputs and their shapes). One fixture runs
the whole chain in pipeline order, so every test also passes alone (`pytest -k test_sample`)."""

from __future__ import annotations

import csv
import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from studykit import make_study, run_chain

pytestmark = pytest.mark.e2e  # every stage in order on the tiny model (slow: not in the day-to-day run)

PAIR = "hopper_gravel"  # human: gentlest Stage II defaults; instance photo is RGB, scene grayscale


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    from dreamsolo.config import load_study

    # a human category setting (the seed study's SD finding), to see it reach Stage II
    root = make_study(tmp_path_factory.mktemp("stages") / "study", [PAIR],
                      {"train_instance.by_category.human": {"lr": 1e-6, "steps": 200}})
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    yield load_study(root)
    mp.undo()


UMASK = 0o007  # not the usual 022: the outputs' modes must follow it (a group-shared study)


@pytest.fixture(scope="module")
def ran(study):
    """Every stage's result, by name, from one in-order run of the chain (priors of every class)."""
    import os

    old = os.umask(UMASK)
    try:
        return run_chain(study, PAIR, through="report", classes=list(study.classes))
    finally:
        os.umask(old)


def test_outputs_follow_the_umask(study, ran):
    """mkstemp, mkdtemp and safetensors make owner-only files; a teammate must be able to read the models."""
    outputs = [study.root / d for d in ("models", "data/prepared", "data/priors", "data/samples", "reports/pairs")]
    paths = [p for d in outputs for p in [d, *d.rglob("*")]]
    assert sum(p.suffix == ".safetensors" for p in paths) >= 4
    wrong = {str(p.relative_to(study.root)): oct(p.stat().st_mode & 0o777) for p in paths
             if p.stat().st_mode & 0o777 != (0o770 if p.is_dir() else 0o660)}
    assert not wrong, wrong


def test_base(study, ran):
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.models.tiny import UNET

    folder = study.root / "models/base/tiny"
    info = json.loads((folder / "dreamsolo_base.json").read_text())
    assert info["kind"] == "build"
    pipe = load_pipeline(folder)
    assert tuple(pipe.unet.config.block_out_channels) == UNET["block_out_channels"]
    assert pipe.tokenizer("a photo of sks cat").input_ids[:2] == [49406, 320]  # real CLIP BPE, offline
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pt")), "weights must be safetensors"


def test_prepare(study, ran):
    out = study.root / "data/prepared" / PAIR
    for role in ("scene", "instance"):
        im = Image.open(out / f"{role}.png")
        assert im.mode == "RGB" and im.size == (64, 64)
    assert json.loads((out / "meta.json").read_text())["resolution"] == 64


def test_generate_priors(study, ran):
    for c in ("person", "gravel"):
        folder = study.root / "data/priors" / c
        lat = load_file(folder / "latents.safetensors")
        assert lat["mean"].shape == lat["std"].shape == (2, 4, 32, 32)
        assert torch.all(lat["std"] > 0)
        manifest = json.loads((folder / "manifest.json").read_text())
        assert manifest["prompt"] == f"a photo of a {study.classes[c]}" and manifest["seeds"] == [0, 1]
        assert manifest["precision"] == "auto" and manifest["dtype"] == _auto_dtype()
        assert lat["mean"].dtype == torch.float32  # encoded by the fp32 VAE whatever the sampling dtype


def _auto_dtype() -> str:
    from dreamsolo.models.loading import device
    from dreamsolo.sampling import dtype_name, sampling_dtype

    return dtype_name(sampling_dtype("auto", device(), "sample"))


def _unet(folder):
    return load_file(folder / "unet/diffusion_pytorch_model.safetensors")


def test_train_scene(study, ran):
    summary = ran["train_scene"]
    out = study.root / "models" / PAIR / "scene"
    base, trained = _unet(study.root / "models/base/tiny"), _unet(out)
    assert any(not torch.equal(base[k], trained[k]) for k in base), "Stage I did not change the UNet"
    rows = list(csv.DictReader(open(out / "train_log.csv")))
    assert len(rows) == 4 and all(float(r["loss_prior"]) > 0 for r in rows)
    assert all(float(r["loss_replay"]) == 0 for r in rows)
    assert summary["prompt"] == "a photo of olis gravel path"
    assert (study.root / "reports/train" / PAIR / "scene.csv").read_text() == (out / "train_log.csv").read_text()


def test_train_instance_starts_from_stage_one_with_replay(study, ran):
    summary = ran["train_instance"]
    assert summary["init"].endswith(f"models/{PAIR}/scene")
    # the out holds no machine path and no timing: the same inputs write the same bytes in any checkout
    out = study.root / "models" / PAIR / "instance"
    meta = json.loads((out / "train_meta.json").read_text())
    assert meta["init"] == "../scene" and not {"seconds", "s_per_step", "resumed_from"} & set(meta)
    names = [json.loads(p.read_text()).get("_name_or_path") for p in out.rglob("*.json")]
    assert "../../scene/unet" in names and not any(str(study.root) in str(n) for n in names)
    assert summary["settings"]["lr"] == 1e-6  # the human category's setting
    rows = list(csv.DictReader(open(study.root / "models" / PAIR / "instance/train_log.csv")))
    assert all(float(r["loss_replay"]) > 0 for r in rows), "scene replay is on by default"
    scene, inst = _unet(study.root / "models" / PAIR / "scene"), _unet(study.root / "models" / PAIR / "instance")
    assert any(not torch.equal(scene[k], inst[k]) for k in scene)


def test_sample(study, ran):
    from dreamsolo.models.loading import device

    folder = study.root / "data/samples" / PAIR
    rows = list(csv.DictReader(open(folder / "manifest.csv")))
    kinds = [r["kind"] for r in rows]
    assert kinds.count("composed") == 2 and kinds.count("class_instance") == 2
    assert {r["seed"] for r in rows} == {"0", "1"}
    composed = next(r for r in rows if r["kind"] == "composed")
    assert composed["prompt"] == "a photo of sks person in olis gravel path"
    assert composed["prompt_clean"] == "a photo of person in gravel path"
    assert all(Image.open(folder / r["file"]).size == (64, 64) for r in rows)
    info = json.loads((folder / "sampling.json").read_text())
    assert info["dtype"] == _auto_dtype() and info["precision"] == "auto" and info["device"] == str(device())
    assert info["weights"] == f"models/{PAIR}/instance" and info["steps"] == study.sample.steps
    assert info["sampler"] == "DPMSolverMultistepScheduler"  # read from the pipeline that ran
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, filter_string=f"tags.dvc_stage = 'sample@{PAIR}'")
    assert list(runs["tags.dtype"]) == [info["dtype"]]  # the same name in MLflow as in sampling.json


def test_sample_base_is_the_floor(study, ran):
    base = study.root / "data/samples_base" / PAIR
    tuned = study.root / "data/samples" / PAIR
    assert (base / "manifest.csv").read_text() == (tuned / "manifest.csv").read_text()  # same prompts, seeds
    assert (base / "0000.png").read_bytes() != (tuned / "0000.png").read_bytes()  # other weights


def test_evaluate(study, ran):
    summary = ran["evaluate"].to_json()  # the stage returns the typed PairResult it wrote
    saved = json.loads((study.root / "reports/pairs" / f"{PAIR}.json").read_text())
    assert saved["n_samples"] == summary["n_samples"] == 12
    assert saved["warning"] == ("random evaluators, numbers not meaningful: clip_t, clip_i, clip_i_scene (CLIP); dino, dino_scene, pres (DINO); "
                                "pretrained: lpips_instance, lpips_scene, div (LPIPS)")
    assert saved["random_metrics"] == ["clip_t", "clip_i", "dino", "clip_i_scene", "dino_scene", "pres"]
    rows = list(csv.DictReader(open(study.root / "reports/pairs" / f"{PAIR}.csv")))
    assert len(rows) == 12 and all(0 <= float(r["lpips_instance"]) for r in rows)


def test_report(study, ran):
    metrics = json.loads((study.root / "reports/metrics.json").read_text())
    pair = json.loads((study.root / "reports/pairs" / f"{PAIR}.json").read_text())
    assert metrics["pairs"][PAIR]["clip_t"] == pytest.approx(pair["metrics"]["clip_t"]["mean"])
    assert (study.root / "reports/index.html").read_text().count("not meaningful") >= 1
