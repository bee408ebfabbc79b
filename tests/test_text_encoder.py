"""Text-encoder training (issue 6): `train_text_encoder: true` with `method: full`, and with `method: lora`
where the installed transformers + peft allow it (refused with a message naming the versions where not)."""

from __future__ import annotations

import pytest
import torch

from studykit import make_study, run_chain

PAIR = "cat_grass"
PROMPT = "a photo of sks cat in olis grass field"
STAGES = ("train_scene", "train_instance")
LORA_TE = {"train.method": "lora", "train.train_text_encoder": True}


def _trained_study(root, edits, monkeypatch):
    from dreamsolo.config import load_study

    make_study(root, [PAIR], edits)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    study = load_study(root)
    run_chain(study, PAIR, through="train_instance")
    return study


def _embed(pipe) -> torch.Tensor:
    ids = pipe.tokenizer([PROMPT], padding="max_length", max_length=pipe.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return pipe.text_encoder(ids)[0]


@pytest.mark.e2e
def test_full_fine_tune_trains_and_saves_the_text_encoder(tmp_path, monkeypatch):
    from diffusers import StableDiffusionPipeline

    from dreamsolo.layout import base_dir, model_dir
    from dreamsolo.models.loading import load_pipeline

    study = _trained_study(tmp_path / "study", {"train.train_text_encoder": True, "train.lr": 1e-3}, monkeypatch)
    base = load_pipeline(base_dir(study.root, study.preset_name))
    before = base.text_encoder.state_dict()
    previous = _embed(base)
    for stage in STAGES:
        folder = model_dir(study.root, PAIR, stage)
        ours = load_pipeline(folder)
        after = ours.text_encoder.state_dict()
        changed = [k for k in before if not torch.equal(before[k], after[k])]
        assert any("self_attn.q_proj" in k for k in changed), f"{stage}: the text encoder did not train"
        emb = _embed(ours)
        assert not torch.allclose(emb, previous), f"{stage}: embeddings equal the previous model's"
        plain = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None)
        assert torch.equal(_embed(plain), emb), f"{stage}: plain diffusers loads a different text encoder"
        previous, before = emb, after


@pytest.mark.e2e
def test_lora_text_encoder_adapters_train_and_reload(tmp_path, monkeypatch):
    """Text-encoder adapters change, and the folder loads (ours, plain diffusers) alike."""
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    from dreamsolo.layout import base_dir, model_dir
    from dreamsolo.models.loading import load_pipeline

    study = _trained_study(tmp_path / "study", {**LORA_TE, "train.lr": 1e-3}, monkeypatch)
    base_emb = _embed(load_pipeline(base_dir(study.root, study.preset_name)))
    for stage, rank in zip(STAGES, (4, 8)):  # Stage II = [scene | instance] on the rank axis
        folder = model_dir(study.root, PAIR, stage)
        state = load_file(folder / "pytorch_lora_weights.safetensors")
        te = {k: v for k, v in state.items() if k.startswith("text_encoder.")}
        assert {k.split(".self_attn.")[1].split(".")[0] for k in te} == {"q_proj", "k_proj", "v_proj", "out_proj"}
        ups = [v for k, v in te.items() if ".up." in k or "lora_B" in k]
        assert ups and all(v.shape[1] == rank for v in ups)
        assert any(v.abs().sum() > 0 for v in ups), f"{stage}: the text-encoder adapters did not train"
        emb = _embed(load_pipeline(folder))
        assert not torch.allclose(emb, base_emb)
        plain = StableDiffusionPipeline.from_pretrained(base_dir(study.root, study.preset_name), safety_checker=None)
        plain.load_lora_weights(folder)
        assert torch.allclose(_embed(plain), emb, atol=1e-5), f"{stage}: plain diffusers gives other embeddings"
