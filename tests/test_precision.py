"""`priors.precision` / `sample.precision`: what `auto` resolves to, what is refused, and that a bf16 run
samples the same images as fp32 up to rounding (so `auto` only buys speed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dreamsolo import sampling
from dreamsolo.config import ParamsError

CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_is_fp32_whatever_the_cpu(monkeypatch, native):
    """The default's dtype is a function of params.yaml, not of the CPU model (issue 26, point 7).
    Mutation tried: `auto` -> bf16 where native_bf16_cpu() (the old rule) fails the native case."""
    monkeypatch.setattr(sampling, "native_bf16_cpu", lambda: native)
    assert sampling.sampling_dtype("auto", CPU, "sample") == torch.float32
    assert sampling.sampling_dtype("bf16", CPU, "sample") == torch.bfloat16  # still there when asked for


def test_auto_on_cuda_is_fp16_and_explicit_values_are_kept():
    assert sampling.sampling_dtype("auto", CUDA, "sample") == torch.float16
    assert sampling.sampling_dtype("fp16", CUDA, "sample") == torch.float16
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        assert sampling.sampling_dtype(name, CPU, "priors") == dtype
        assert sampling.dtype_name(dtype) == name


def test_fp16_on_cpu_is_refused_naming_the_key():
    with pytest.raises(ParamsError, match=r"^priors\.precision: fp16 is for CUDA GPUs"):
        sampling.sampling_dtype("fp16", CPU, "priors")


def test_unknown_precision_is_refused_by_params(tmp_path):
    from studykit import make_study

    from dreamsolo.config import load_study

    root = make_study(tmp_path / "study", ["cat_grass"])
    text = (root / "params.yaml").read_text()
    assert "  precision: auto" in text
    (root / "params.yaml").write_text(text.replace("  precision: auto", "  precision: fp64", 1))
    with pytest.raises(ParamsError, match=r"priors\.precision.*fp64"):
        load_study(root)


@pytest.mark.parametrize("stage", ["priors", "sample"])
def test_a_precision_the_device_cannot_run_stops_the_stage_before_any_work(tmp_path, monkeypatch, stage):
    from studykit import make_study

    from dreamsolo.config import load_study
    from dreamsolo.stages.generate_priors import run as generate_priors
    from dreamsolo.stages.sample import run as sample_pair

    root = make_study(tmp_path / "study", ["cat_grass"])
    text = (root / "params.yaml").read_text()
    section = text.index(f"\n{stage}:")
    at = text.index("  precision: auto", section)
    (root / "params.yaml").write_text(text[:at] + "  precision: fp16" + text[at + len("  precision: auto"):])
    db = tmp_path / "mlflow.db"
    monkeypatch.setattr("dreamsolo.models.loading.device", lambda: CPU)  # fp16 is refused on a CPU only
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db.as_posix()}")
    study = load_study(root)
    run = (lambda: generate_priors(study, "cat")) if stage == "priors" else (lambda: sample_pair(study, "cat_grass"))
    with pytest.raises(ParamsError, match=rf"^{stage}\.precision: fp16 is for CUDA GPUs"):
        run()  # no model on disk yet: it stops before loading one
    assert not (root / "data/priors").exists() and not (root / "data/samples").exists()
    assert not db.exists(), "no MLflow run is opened for a stage that cannot run"


@pytest.fixture(scope="module")
def tiny_pipe(tmp_path_factory):
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.models.tiny import build_tiny

    folder = tmp_path_factory.mktemp("tiny") / "model"
    build_tiny(folder, 0)
    return folder, load_pipeline


def _images(folder, load, precision: str) -> np.ndarray:
    pipe = load(folder)
    sampling.use_fast_sampler(pipe)
    sampling.to_sampling_dtype(pipe, sampling.sampling_dtype(precision, pipe.device, "sample"))
    with torch.inference_mode():
        ims = sampling.generate(pipe, ["a photo of a cat", "a photo of a grass field"], [0, 1], steps=8,
                                guidance_scale=7.5, resolution=64, batch_size=2)
    return np.stack([np.asarray(im, dtype=np.float32) for im in ims])


def test_bf16_samples_match_fp32_up_to_rounding(tiny_pipe):
    folder, load = tiny_pipe
    fp32, bf16 = _images(folder, load, "fp32"), _images(folder, load, "bf16")
    other_seed = np.roll(fp32, 1, axis=0)  # the other prompt/seed: how far unrelated images are
    assert not np.array_equal(fp32, bf16)  # bf16 really ran
    err, unrelated = np.abs(fp32 - bf16).mean(), np.abs(fp32 - other_seed).mean()
    assert err < 0.05 * unrelated, (err, unrelated)  # here: 0.47 vs 44.5 grey levels
