"""A hub preset that cannot be loaded stops with one line naming the hub id and revision (no network used).

huggingface_hub reads HF_HUB_OFFLINE / HF_HOME / HF_ENDPOINT when imported, so those cases run in a
fresh process; "no such repo / revision" is the hub's answer, raised here from a patched loader.
"""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

from studykit import env, make_study

from dreamsolo.config import Preset
from dreamsolo.models.hub import HubModelUnavailable

HUB_ID = "stable-diffusion-v1-5/stable-diffusion-v1-5"
LOCAL = ("or set presets.sd15.source to a local diffusers folder (holding model_index.json) or a single-file "
         "Stable Diffusion .safetensors checkpoint (README, Presets)")
LOAD = f"""
import sys
from pathlib import Path
from dreamsolo.config import Preset
from dreamsolo.models.sources import materialise_base
try:
    materialise_base(Preset(source={HUB_ID!r}, revision=sys.argv[1] or None), Path(sys.argv[2]), Path.cwd(),
                     "presets.sd15")
except Exception as e:
    print(type(e).__name__, e, sep="|")
"""


def _offline_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    (tmp_path / "hf").mkdir(exist_ok=True)
    return {**env(tmp_path), "HF_HOME": str(tmp_path / "hf"), "DREAMSOLO_WARM": "0", **extra}


def _load_in_fresh_process(tmp_path: Path, revision: str, **extra: str) -> str:
    proc = subprocess.run([sys.executable, "-c", LOAD, revision, str(tmp_path / "base")], cwd=tmp_path,
                          env=_offline_env(tmp_path, **extra), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not (tmp_path / "base").exists()
    return proc.stdout.strip()


@pytest.mark.e2e
def test_offline_mode_names_hub_id_revision_and_the_local_options(tmp_path):
    out = _load_in_fresh_process(tmp_path, "", HF_HUB_OFFLINE="1")
    assert out == (f"HubModelUnavailable|presets.sd15.source: cannot reach the Hugging Face Hub for {HUB_ID} at "
                   "revision main, and it is not in the local cache (offline mode: HF_HUB_OFFLINE is set); "
                   f"connect once to download it (HF_HUB_OFFLINE unset), {LOCAL}")


@pytest.mark.e2e
def test_a_hub_that_does_not_answer_is_unreachable_too(tmp_path):
    """A closed local port stands in for a machine without network: connection refused, not a traceback."""
    out = _load_in_fresh_process(tmp_path, "v1.0", HF_ENDPOINT="http://127.0.0.1:9", HF_HUB_ETAG_TIMEOUT="2",
                                 HF_HUB_DOWNLOAD_TIMEOUT="2")
    start = (f"HubModelUnavailable|presets.sd15.source: cannot reach the Hugging Face Hub for {HUB_ID} at "
             "revision v1.0, and it is not in the local cache (")
    assert out.startswith(start) and out.endswith(f"; connect once to download it (HF_HUB_OFFLINE unset), {LOCAL}")
    assert "\n" not in out


@pytest.fixture
def no_index_lookup(monkeypatch):
    """The loader's first look at the hub (model_index.json, to pick SD or SDXL) answered as when it cannot be
    read: these tests patch the load that follows, and the lookup would otherwise wait on the network."""
    from dreamsolo.models import sources
    from dreamsolo.models.family import SD

    monkeypatch.setattr(sources, "_hub_pipeline", lambda preset: SD)


def _hub_answer(name: str) -> Exception:
    """The huggingface_hub error the hub's 404 / 403 becomes, wrapped as diffusers wraps it."""
    import huggingface_hub.errors as errors

    cause = getattr(errors, name)(f"404 Client Error. {name} for url: https://huggingface.co/api/models/x",
                                  response=types.SimpleNamespace(headers={}, request=None))
    wrapped = OSError(f"{HUB_ID} is not a valid model identifier")
    wrapped.__cause__ = cause
    return wrapped


@pytest.mark.parametrize("name, start", [
    ("RepositoryNotFoundError", f"presets.sd15.source: the hub has no repository {HUB_ID} at revision nope ("),
    ("RevisionNotFoundError", f"presets.sd15.source: the hub has no revision {HUB_ID} at revision nope ("),
    ("GatedRepoError", f"presets.sd15.source: hub model {HUB_ID} at revision nope is gated ("),
])
def test_no_such_repo_or_revision_is_worded_apart(tmp_path, monkeypatch, no_index_lookup, name, start):
    from diffusers import StableDiffusionPipeline

    from dreamsolo.models.sources import materialise_base

    def refuse(*_a, **_k):
        raise _hub_answer(name)

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", refuse)
    with pytest.raises(HubModelUnavailable) as err:
        materialise_base(Preset(source=HUB_ID, revision="nope"), tmp_path / "base", tmp_path, "presets.sd15")
    msg = str(err.value)
    assert msg.startswith(start) and msg.endswith(LOCAL) and "\n" not in msg, msg
    assert isinstance(err.value, FileNotFoundError)  # a user error: the stage prints it as one line


def test_other_loader_errors_are_not_disguised(tmp_path, monkeypatch, no_index_lookup):
    from diffusers import StableDiffusionPipeline

    from dreamsolo.models.sources import materialise_base

    def broken(*_a, **_k):
        raise RuntimeError("a bug, not the network")

    monkeypatch.setattr(StableDiffusionPipeline, "from_pretrained", broken)
    with pytest.raises(RuntimeError, match="a bug, not the network"):
        materialise_base(Preset(source=HUB_ID), tmp_path / "base", tmp_path, "presets.sd15")


@pytest.mark.e2e
def test_base_stage_offline_on_sd15_is_one_line(tmp_path):
    root = make_study(tmp_path / "study", ["cat_grass"], {"model.preset": "sd15"})
    # MLFLOW_LOGGING_LEVEL: MLflow's own INFO lines when it creates the fresh store are not the error
    proc = subprocess.run([sys.executable, "stages/base.py"], cwd=root,
                          env=_offline_env(tmp_path, HF_HUB_OFFLINE="1", MLFLOW_LOGGING_LEVEL="WARNING",
                                           MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: base: presets.sd15.source: cannot reach the Hugging Face Hub for {HUB_ID} "
                               "at revision main"), lines[0]
    assert not (root / "models/base/sd15").exists()
