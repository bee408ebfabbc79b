"""The `toy` preset's data and pretraining loop: deterministic, resumable, a loadable diffusers folder."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("skimage")
pytest.importorskip("sklearn")

from dreamsolo.models import toy_data  # noqa: E402

needs_stamps = pytest.mark.skipif(not toy_data.STAMPS.is_dir(), reason="apt package tuxpaint-stamps-default")


def test_textures_are_seeded():
    for kind in toy_data.SCENES:
        a = np.asarray(toy_data.texture(kind, np.random.default_rng(3)))
        b = np.asarray(toy_data.texture(kind, np.random.default_rng(3)))
        assert a.shape == (64, 64, 3) and (a == b).all()


@needs_stamps
def test_study_classes_get_class_prompts():
    cap = toy_data.stamp_caption
    assert cap(toy_data.STAMPS / "animals/mammals/cats/tiger.png") == "a photo of a cat"
    assert cap(toy_data.STAMPS / "animals/mammals/equines/horse.png") == "a photo of a horse"
    assert cap(toy_data.STAMPS / "space/rocket1.svg") == "a photo of a rocket"
    assert cap(toy_data.STAMPS / "animals/mammals/giraffe.png") == "a photo of a giraffe"


@needs_stamps
def test_pretrain_resumes_and_loads(tmp_path):
    import torch

    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.models.toy import Plan, pretrain_toy

    torch.set_num_threads(1)
    plan = Plan(images=24, vae_steps=2, unet_steps=2, vae_batch=2, unet_batch=2, decoder_steps=2, text_steps=2,
                text_batch=2)
    info = pretrain_toy(tmp_path / "toy", tmp_path / "ckpt", plan)
    again = pretrain_toy(tmp_path / "toy2", tmp_path / "ckpt", plan)  # everything done: resumes, trains nothing
    assert info["unet"]["steps"] == again["unet"]["steps"] == info["text"]["steps"] == 2
    pipe = load_pipeline(tmp_path / "toy2")
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels == 16
    assert pipe.vae.config.scaling_factor == pytest.approx(info["scaling_factor"])
    assert pipe.tokenizer.tokenize("a photo of sks cat") == ["a</w>", "photo</w>", "of</w>", "sks</w>", "cat</w>"]
