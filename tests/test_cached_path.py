"""The cached training path (latents and text embeddings computed once) trains to the same losses as
the uncached one the reference script takes (every step: read the image files, VAE-encode them,
tokenize and text-encode the prompts), same seed, same steps, on the CPU."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from studykit import make_study, run_chain

pytestmark = pytest.mark.e2e  # the chain and two trainings (slow: not in the day-to-day run)

PAIR = "cat_grass"
STEPS = 6


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from dreamsolo.config import load_study
    from dreamsolo.stages.train import stage_inputs

    root = make_study(tmp_path_factory.mktemp("cached") / "study", [PAIR])
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{(root.parent / 'mlflow.db').as_posix()}")
        mp.chdir(root.parent)
        study = load_study(root)
        run_chain(study, PAIR, classes=[study.pair(PAIR).scene_class])
    return study, stage_inputs(study, PAIR, "train_scene")


def uncached_inputs(pipe, inp):
    """What the reference script recomputes at every step, from the files on disk."""
    from dreamsolo.sampling import encode_latents
    from dreamsolo.training.inputs import Cached

    prior_dir = inp.prior_latents.parent
    files = json.loads((prior_dir / "manifest.json").read_text())["files"]
    image = encode_latents(pipe.vae, [Image.open(inp.image).convert("RGB")])
    prior = encode_latents(pipe.vae, [Image.open(prior_dir / f).convert("RGB") for f in files])
    ids = pipe.tokenizer([inp.prompt, inp.prior_prompt], padding="max_length",
                         max_length=pipe.tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        text = pipe.text_encoder(ids)[0].float()
    return Cached(image, prior, None, text, ids)


def losses(study, inp, cached_path: bool) -> list[float]:
    from diffusers import DDPMScheduler

    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.training.inputs import cache_inputs, make_batch
    from dreamsolo.training.loss import Groups, dreambooth_loss
    from dreamsolo.training.trainable import make_optimizer, prepare_model

    cfg = study.train(PAIR, "train_scene")
    dev = torch.device("cpu")
    torch.manual_seed(cfg.seed)
    pipe = load_pipeline(inp.init_dir)
    sched = DDPMScheduler.from_config(pipe.scheduler.config)
    trainable = prepare_model(pipe, cfg, dev)
    opt = make_optimizer(list(trainable.values()), cfg, dev)
    gen = torch.Generator().manual_seed(cfg.seed)
    groups = Groups(cfg.batch_size, cfg.batch_size, 0, cfg.prior_weight, 0.0)
    cached = cache_inputs(pipe, inp, dev) if cached_path else None
    out = []
    for _ in range(STEPS):
        c = cached if cached_path else uncached_inputs(pipe, inp)
        latents, text = make_batch(c, cfg.batch_size, pipe.vae.config.scaling_factor, gen)
        loss = dreambooth_loss(pipe.unet, sched, latents, text, groups, gen)["loss"]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        out.append(loss.item())
    return out


def test_cached_path_trains_to_the_same_losses_as_the_uncached_one(inputs):
    study, inp = inputs
    fast = losses(study, inp, cached_path=True)
    slow = losses(study, inp, cached_path=False)
    assert len(set(fast)) == STEPS, "the losses should differ from step to step"
    assert fast == pytest.approx(slow, rel=1e-5, abs=1e-6), (fast, slow)
