"""LoRA (issue 6): adapter-only training, diffusers-format files, Stage II starting from Stage I."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from studykit import make_study, run_chain

pytestmark = pytest.mark.e2e  # the chain through Stage II with LoRA (slow: not in the day-to-day run)

PAIR = "cat_grass"


@pytest.fixture(scope="module")
def lora_study(tmp_path_factory):
    """A one-pair study trained with LoRA in both stages (in-process: no interpreter start-up per stage)."""
    from dreamsolo.config import load_study

    root = make_study(tmp_path_factory.mktemp("lora") / "study", [PAIR], {"train.method": "lora"})
    mp = pytest.MonkeyPatch()
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root}/mlflow.db")
    study = load_study(root)
    ran = run_chain(study, PAIR, through="train_instance")
    summaries = {s: ran[s] for s in ("train_scene", "train_instance")}
    yield study, summaries
    mp.undo()


def _scene_batch(study, pipe):
    """Fixed latents, noise and timesteps for the scene prompt: a deterministic probe of a model."""
    from dreamsolo.training.inputs import cache_inputs
    from dreamsolo.stages.train import stage_inputs

    inp = stage_inputs(study, PAIR, "train_scene")
    cached = cache_inputs(pipe, inp, torch.device("cpu"))
    gen = torch.Generator().manual_seed(123)
    latents = cached.image["mean"].expand(4, -1, -1, -1) * pipe.vae.config.scaling_factor
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.tensor([50, 300, 600, 900])
    return latents, noise, t, cached.text[0:1].expand(4, -1, -1)


def _probe_loss(unet, scheduler, batch) -> float:
    latents, noise, t, text = batch
    with torch.no_grad():
        pred = unet(scheduler.add_noise(latents, noise, t), t, encoder_hidden_states=text).sample
    return torch.nn.functional.mse_loss(pred, noise).item()


def test_lora_writes_adapter_sized_diffusers_files(lora_study):
    from safetensors.torch import load_file

    from dreamsolo.layout import model_dir
    from dreamsolo.models.loading import read_info

    study, _ = lora_study
    scene, instance = (model_dir(study.root, PAIR, s) for s in ("train_scene", "train_instance"))
    for folder, rank in ((scene, 4), (instance, 8)):  # Stage II = [scene | instance] on the rank axis
        assert read_info(folder)["method"] == "lora"
        assert not (folder / "unet").exists(), "a LoRA stage must not write a full UNet"
        state = load_file(folder / "pytorch_lora_weights.safetensors")
        downs = [v for k, v in state.items() if k.endswith("lora.down.weight") or "lora_A" in k]
        assert downs and all(v.shape[0] == rank for v in downs)
        assert all(k.startswith("unet.") for k in state)
    assert (instance / "pytorch_lora_weights.safetensors").stat().st_size < 200_000


def test_lora_training_changes_only_adapter_weights(lora_study):
    from dreamsolo.layout import base_dir
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.training.loss import Groups, dreambooth_loss
    from dreamsolo.training.trainable import make_optimizer, prepare_model

    study, _ = lora_study
    cfg = study.train(PAIR, "train_scene")
    pipe = load_pipeline(base_dir(study.root, study.preset_name))
    before = {k: v.clone() for k, v in pipe.unet.state_dict().items()}
    trainable = prepare_model(pipe, cfg, torch.device("cpu"))
    assert trainable and all("lora" in k for k in trainable)
    opt = make_optimizer(list(trainable.values()), dataclasses.replace(cfg, lr=1e-2), torch.device("cpu"))
    from diffusers import DDPMScheduler

    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        latents, text = torch.randn(2, 4, 32, 32, generator=gen), torch.randn(2, 77, 32, generator=gen)
        dreambooth_loss(pipe.unet, sched, latents, text, Groups(1, 1), gen)["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    after = pipe.unet.state_dict()
    base_keys = [k for k in after if "lora" not in k]
    for k in base_keys:
        key = k.replace(".base_layer", "")
        assert torch.equal(after[k], before[key]), f"base weight {key} changed"
    lora_b = [v for k, v in after.items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b), "the adapters did not train"


def test_stage_two_starts_from_stage_one(lora_study):
    """Stage II's model at step 0 (Stage I fused + a zero-initialised instance adapter) == Stage I."""
    from diffusers import DDPMScheduler

    from dreamsolo.layout import model_dir
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.training.trainable import prepare_model

    study, _ = lora_study
    stage1 = load_pipeline(model_dir(study.root, PAIR, "train_scene"))
    sched = DDPMScheduler.from_config(stage1.scheduler.config)
    batch = _scene_batch(study, stage1)
    end_of_stage1 = _probe_loss(stage1.unet, sched, batch)
    stage2 = load_pipeline(model_dir(study.root, PAIR, "train_scene"))
    prepare_model(stage2, study.train(PAIR, "train_instance"), torch.device("cpu"))
    assert _probe_loss(stage2.unet, sched, batch) == pytest.approx(end_of_stage1, rel=1e-5)


def test_saved_lora_loads_in_plain_diffusers_with_same_image(lora_study):
    from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline

    from dreamsolo.layout import base_dir, model_dir
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.sampling import generate, use_fast_sampler

    study, _ = lora_study
    folder = model_dir(study.root, PAIR, "train_instance")
    prompt = "a photo of sks cat in olis grass field"
    ours = load_pipeline(folder)
    use_fast_sampler(ours)
    mine = generate(ours, [prompt], [7], steps=4, guidance_scale=7.5, resolution=64, batch_size=1)[0]
    plain = StableDiffusionPipeline.from_pretrained(base_dir(study.root, study.preset_name), safety_checker=None)
    plain.load_lora_weights(folder)
    plain.scheduler = DPMSolverMultistepScheduler.from_config(plain.scheduler.config)
    latents = torch.randn((1, 4, 32, 32), generator=torch.Generator().manual_seed(7))
    theirs = plain(prompt, num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
                   latents=latents * plain.scheduler.init_noise_sigma).images[0]
    diff = np.abs(np.asarray(mine, dtype=int) - np.asarray(theirs, dtype=int))
    assert diff.max() <= 2, f"LoRA loaded by plain diffusers differs from the pipeline's (max {diff.max()})"
    # and the adapter really matters: without it the image is different
    plain.unload_lora_weights()
    bare = plain(prompt, num_inference_steps=4, guidance_scale=7.5, height=64, width=64,
                 latents=latents * plain.scheduler.init_noise_sigma).images[0]
    assert np.abs(np.asarray(bare, dtype=int) - np.asarray(theirs, dtype=int)).max() > 0
