"""The `toy` preset: Stable Diffusion's architecture at toy size, *pretrained* here on offline images.

`tiny` has random weights (its images are noise, so fine-tuning changes nothing measurable). `toy`
trains the same component types (AutoencoderKL, CLIPTextModel with CLIP's BPE, UNet2DConditionModel,
DDIM-family scheduler) on captioned 64 px images assembled by `toy_data` from packages, in minutes
on a CPU. Phases: VAE, then latents of the pool, then UNet + text encoder jointly (a small
encoder trained from scratch must learn to tell the study's class prompts apart). Each phase
checkpoints to `ckpt/<phase>.pt` and resumes there; the step count is exact with `steps`, and with
a time budget it is what fitted (recorded in `dreamsolo_toy.json`). The pool is `toyworld.pool`'s.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dreamsolo.models.tiny import SCHEDULER, write_clip_bpe
from dreamsolo.toyworld.pool import Pool, identity_captions, rare_tokens
from dreamsolo.toyworld.train import run_phase
from dreamsolo.toyworld.sources import SOURCES

# f4 VAE with 16 latent channels: 16x16 latents keep the UNet ~4x cheaper than 32x32, and 16 channels
# (4096 numbers per image, as f2 x 4) let a briefly trained VAE reconstruct far better than 4 or 8
# (a run with 8 reached 19 dB on the study photos after 450 steps). No mid-block attention: cost.
VAE = dict(
    in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(32, 64, 64), layers_per_block=1,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
    sample_size=64, mid_block_add_attention=False,
)
UNET = dict(  # cross-attention at both levels: the prompt must steer layout, not only texture
    sample_size=16, in_channels=16, out_channels=16, layers_per_block=1, block_out_channels=(64, 128),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=64, attention_head_dim=4,
)
TEXT = dict(
    hidden_size=64, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4,
    max_position_embeddings=77, vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407, projection_dim=64,
)
# Zero terminal SNR with v-prediction (Lin et al., WACV 2024), as diffusers supports it: with SD's
# schedule the last step keeps ~7% of the image's signal, so a model trained there learns to read the
# layout and mean colour from x_T, and samples from pure noise came out as one purple mush per seed
# whatever the prompt (the first build). "trailing" spacing makes sampling start at t = 999.
SCHEDULER_TOY = dict(SCHEDULER, prediction_type="v_prediction", rescale_betas_zero_snr=True,
                     timestep_spacing="trailing")
@dataclass(frozen=True)
class Plan:
    """Pretraining settings. `steps` (exact, deterministic) or `seconds` (what fits) per run."""

    seed: int = 0
    images: int = 40000  # size of the pool it was given (recorded; toyworld.pool builds it)
    vae_steps: int | None = None
    unet_steps: int | None = None
    unet_restart_steps: int = 0  # a second UNet cycle (warmup, then linear decay again): a warm restart
    seconds: float | None = None
    decoder_steps: int | None = None
    vae_share: float = 0.4  # of `seconds`, for the VAE; the UNet gets what the decoder does not
    decoder_share: float = 0.1
    vae_batch: int = 32
    vae_crop: int = 32
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6  # as SD's VAE: a near-deterministic autoencoder
    unet_batch: int = 16
    unet_lr: float = 5e-4
    text_steps: int = 300  # caption classification alone, before the UNet (see train_text)
    text_batch: int = 64
    text_weight: float = 0.1  # of the caption-classification term during the joint UNet phase
    warmup: int = 100
    uncond: float = 0.1  # caption dropout, so classifier-free guidance has an unconditional model
    save_every_s: float = 60.0
    # what CaptionHead classifies: the whole caption, or its noun (the pool's class). Retrain 3 (noun) lost its
    # identifiers: `<V> cat` bound the instance as well as `<S> cat` (docs/TOY_BUILDS.md); caption stays the default
    head: str = "caption"
    init: str | None = None  # a toy pipeline folder to continue from: its VAE kept as is (no VAE/decoder phase)
    # with `init`: its text encoder kept as is too (no text phase, no caption term), so the identifiers' token
    # neighbourhood the method tests rely on cannot move; only the UNet learns the new pool
    freeze_text: bool = False
    # share of the cut-out pictures captioned `a photo of <rare word> <noun>`, the word fixed per cut-out
    # (pool.identity_captions), as the study names an instance; 0 = the pool's captions as they are
    identity_share: float = 0.0
    identity_exclude: tuple[str, ...] = ("sks", "olis")  # the study's identifiers: never a pool word
    # the UNet phase sees only the pictures of these classes (empty: all): a probe of whether the UNet's size or
    # the pool's breadth keeps the objects from being drawn (docs/TOY_BUILDS.md, probe)
    only: tuple[str, ...] = ()


def to_unit(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0


def train_vae(vae, images: torch.Tensor, ckpt: Path, plan: Plan) -> dict:
    """Reconstruction (MSE + L1) plus a tiny KL term, on random 32 px crops (the VAE is convolutional:
    a crop costs 1/4 of a full image, so it sees 4x the pixels per second); mirrored half the time."""
    def step(gen):
        idx = torch.randint(0, len(images), (plan.vae_batch,), generator=gen)
        y0, x0 = (int(v) * 4 for v in torch.randint(0, 9, (2,), generator=gen))  # on the latent grid
        x = to_unit(images[idx][:, :, y0:y0 + plan.vae_crop, x0:x0 + plan.vae_crop])
        x = torch.where(torch.rand(len(x), 1, 1, 1, generator=gen) < 0.5, x.flip(-1), x)
        dist = vae.encode(x).latent_dist
        z = dist.mean + dist.std * torch.randn(dist.mean.shape, generator=gen)
        y = vae.decode(z).sample
        return (y - x).pow(2).mean() + (y - x).abs().mean() + plan.kl_weight * dist.kl().mean()

    seconds = plan.seconds * plan.vae_share if plan.seconds else None
    return run_phase("vae", ckpt, {"vae": vae}, plan.vae_lr, plan, plan.vae_steps, seconds, step)


def train_decoder(vae, images: torch.Tensor, lat: dict, ckpt: Path, plan: Plan) -> dict:
    """Decoder only, on full 64 px images from the cached posteriors: the encoder (so the latent space
    the UNet learnt) stays fixed, as for SD's ft-MSE decoder. Removes what 32 px crops leave at 64 px."""
    vae.requires_grad_(False)
    modules = {"decoder": vae.decoder, "post_quant_conv": vae.post_quant_conv}
    for m in modules.values():
        m.requires_grad_(True).train()

    def step(gen):
        idx = torch.randint(0, len(images), (plan.vae_batch // 2,), generator=gen)
        z = lat["mean"][idx] + lat["std"][idx] * torch.randn(lat["mean"][idx].shape, generator=gen)
        y, x = vae.decode(z).sample, to_unit(images[idx])
        return (y - x).pow(2).mean() + (y - x).abs().mean()

    seconds = plan.seconds * plan.decoder_share if plan.seconds else None
    return run_phase("decoder", ckpt, modules, plan.vae_lr * 0.3, plan, plan.decoder_steps, seconds, step)


@torch.no_grad()
def encode_pool(vae, images: torch.Tensor, ckpt: Path) -> dict[str, torch.Tensor]:
    """Posterior mean/std of every pool image, once (as the study's cached training)."""
    path = ckpt / "latents.pt"
    if not path.is_file():
        vae.eval()
        means, stds = [], []
        for i in tqdm(range(0, len(images), 64), desc="toy latents"):
            d = vae.encode(to_unit(images[i:i + 64])).latent_dist
            means.append(d.mean)
            stds.append(d.std)
        torch.save({"mean": torch.cat(means), "std": torch.cat(stds)}, path)
    return torch.load(path, weights_only=True)


class CaptionHead(torch.nn.Module):
    """Which of the pool's captions a text-encoder output came from, from its mean over all 77 positions.

    Trained from scratch by denoising alone, the encoder learnt the scene words (whole-image textures)
    and mapped every object prompt to nearly the unconditional output (cosine 0.998 `a cat` vs `a
    horse`, 0.99 vs ``, after 2000 steps), so the UNet drew the same image for all objects. Classifying
    the caption from every position's mean keeps each caption's words apart in what the UNet attends to.
    """

    def __init__(self, width: int, n: int):
        super().__init__()
        self.linear = torch.nn.Linear(width, n)

    def loss(self, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(self.linear(hidden.mean(dim=1)), target)


def caption_ids(tokenizer, captions: list[str]) -> tuple[list[str], torch.Tensor, torch.Tensor]:
    """(distinct captions + "", index of each pool caption among them, their token ids)."""
    uniq = sorted(set(captions)) + [""]
    index = {c: i for i, c in enumerate(uniq)}
    which = torch.tensor([index[c] for c in captions])
    ids = tokenizer(uniq, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    return uniq, which, ids


def head_targets(uniq: list[str], captions: list[str], classes: list[str], by: str) -> torch.Tensor:
    """CaptionHead's label of each distinct caption (not ""): its own index, or its noun's (the pool's class).

    Over 6,643 captions the caption head ended near chance (loss 8.4 of ln 6,643 = 8.8): most captions
    differ only in style or place. The ~2,300 nouns are what the object prompts must keep apart."""
    if by == "caption":
        return torch.arange(len(uniq) - 1)
    noun = dict(zip(captions, classes))  # a caption names one noun: the image's class
    index = {n: i for i, n in enumerate(sorted(set(classes)))}
    return torch.tensor([index[noun[c]] for c in uniq[:-1]])


def train_text(text_encoder, head: CaptionHead, ids: torch.Tensor, target: torch.Tensor, ckpt: Path,
               plan: Plan) -> dict:
    """The text encoder alone on caption classification (seconds): the UNet then starts from an encoder
    whose outputs already tell the captions apart."""
    n = len(ids) - 1  # not the empty caption

    def step(gen):
        cap = torch.randint(0, n, (plan.text_batch,), generator=gen)
        return head.loss(text_encoder(ids[cap])[0], target[cap])

    modules = {"text_encoder": text_encoder, "head": head}
    return run_phase("text", ckpt, modules, plan.unet_lr, plan, plan.text_steps, None, step)


@torch.no_grad()
def encode_captions(text_encoder, ids: torch.Tensor) -> torch.Tensor:
    """A frozen encoder's output for each distinct caption, once (not every UNet step)."""
    return torch.cat([text_encoder(chunk)[0] for chunk in ids.split(512)])


def unet_rows(classes: list[str], only: tuple[str, ...]) -> torch.Tensor:
    """The pool rows the UNet phase draws from: every row, or those of the classes in `only` (each must occur)."""
    if not only:
        return torch.arange(len(classes))
    missing = sorted(set(only) - set(classes))
    if missing:
        raise SystemExit(f"--only: no picture of {', '.join(missing)} in the pool")
    wanted = set(only)
    return torch.tensor([i for i, c in enumerate(classes) if c in wanted])


def train_unet(unet, text_encoder, head: CaptionHead, target: torch.Tensor, caps: tuple, frozen: torch.Tensor | None,
               scheduler, lat: dict, scale: float, ckpt: Path, plan: Plan, rows: torch.Tensor,
               restart: bool = False) -> dict:
    """Joint UNet + text-encoder denoising on the cached latents, with caption dropout, plus the caption
    classification term (CaptionHead) on the captions that were not dropped. `caps` is caption_ids' result;
    `frozen` the encoder's outputs per distinct caption when the encoder is frozen (encode_captions); `rows`
    the pool rows drawn from (unet_rows: all of them draws exactly as before it existed)."""
    uniq, which, ids = caps

    def step(gen):
        idx = rows[torch.randint(0, len(rows), (plan.unet_batch,), generator=gen)]
        cap = torch.where(torch.rand(len(idx), generator=gen) < plan.uncond, len(uniq) - 1, which[idx])
        z = (lat["mean"][idx] + lat["std"][idx] * torch.randn(lat["mean"][idx].shape, generator=gen)) * scale
        noise = torch.randn(z.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (len(z),), generator=gen)
        text = frozen[cap] if frozen is not None else text_encoder(ids[cap])[0]
        pred = unet(scheduler.add_noise(z, noise, t), t, encoder_hidden_states=text).sample
        goal = scheduler.get_velocity(z, noise, t) if v_pred else noise
        loss = ((pred - goal).pow(2).mean(dim=(1, 2, 3)) * weight[t]).mean()
        kept = cap != len(uniq) - 1
        if frozen is not None or not kept.any():
            return loss
        return loss + plan.text_weight * head.loss(text[kept], target[cap[kept]])

    # Weight on the x0 error clamp(SNR, 1, 5): Min-SNR-5 (Hang et al., ICCV 2023) keeps the low-noise
    # steps, whose noise cannot be predicted, from dominating; the floor of 1 ("truncated SNR",
    # Salimans & Ho 2022) keeps the high-noise steps, where the prompt decides the layout, from
    # vanishing at zero terminal SNR. The v error is (SNR + 1) x the x0 error, the eps error SNR x.
    v_pred = scheduler.config.prediction_type == "v_prediction"
    snr = scheduler.alphas_cumprod / (1 - scheduler.alphas_cumprod)
    weight = snr.clamp(1.0, 5.0) / (snr + 1 if v_pred else snr.clamp(min=1e-8))

    seconds = plan.seconds * (1 - plan.vae_share - plan.decoder_share) if plan.seconds else None
    modules = {"unet": unet} if plan.freeze_text else {"unet": unet, "text_encoder": text_encoder, "head": head}
    if restart:  # from the first cycle's weights, a fresh optimizer and schedule (SGDR, Loshchilov & Hutter 2017)
        return run_phase("unet_restart", ckpt, modules, plan.unet_lr, plan, plan.unet_restart_steps, None, step)
    return run_phase("unet", ckpt, modules, plan.unet_lr, plan, plan.unet_steps, seconds, step)


def pretrain_toy(dest: Path, ckpt: Path, plan: Plan, pool: Pool) -> dict:
    """Build, pretrain on `pool` and save the toy pipeline at `dest` (diffusers folder, safetensors)."""
    from diffusers import (AutoencoderKL, DDIMScheduler, DDPMScheduler, StableDiffusionPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    ckpt.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    torch.manual_seed(plan.seed)  # weight init
    images, captions, counts = torch.from_numpy(pool.images).permute(0, 3, 1, 2), pool.captions, pool.counts
    if plan.init:  # continue a toy pipeline: its VAE (so the latent space its UNet learnt) stays as it is
        init = Path(plan.init)
        vae, unet = AutoencoderKL.from_pretrained(init / "vae"), UNet2DConditionModel.from_pretrained(init / "unet")
        text_encoder = CLIPTextModel.from_pretrained(init / "text_encoder")
        tokenizer = CLIPTokenizer.from_pretrained(init / "tokenizer")
        vae_state = None
    else:
        vae, unet = AutoencoderKL(**VAE), UNet2DConditionModel(**UNET)
        with torch.no_grad():  # start with a small posterior std (e^-4): at std 1 the decoder first
            vae.quant_conv.bias[VAE["latent_channels"]:] = -8.0  # sees pure noise, and learning is slow
        text_encoder = CLIPTextModel(CLIPTextConfig(**TEXT))
        write_clip_bpe(ckpt / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(ckpt / "tokenizer", model_max_length=77)
        vae_state = train_vae(vae, images, ckpt, plan)
    lat = encode_pool(vae, images, ckpt)
    if not plan.init:  # unit-variance latents, as SD's 0.18215 is for its VAE; an init keeps its own
        vae.register_to_config(scaling_factor=float(1.0 / lat["mean"].std()))
    scale = float(vae.config.scaling_factor)
    if plan.identity_share:
        tokens = rare_tokens(tokenizer.get_vocab(), captions, list(plan.identity_exclude))
        captions, renamed = identity_captions(pool, plan.identity_share, tokens, plan.seed)
        counts = counts | {"identity_captions": renamed, "identity_words": len(tokens)}
    noise = DDPMScheduler.from_config(DDIMScheduler(**SCHEDULER_TOY).config)  # as train_stage builds its own
    caps = caption_ids(tokenizer, captions)  # tokenised once for the text phase and every UNet cycle
    uniq, _, ids = caps
    target = head_targets(uniq, captions, pool.classes, plan.head)
    torch.manual_seed(plan.seed + 1)  # the head's init, the same whether or not earlier phases resumed
    head = CaptionHead(TEXT["hidden_size"], int(target.max()) + 1)
    text_encoder.requires_grad_(not plan.freeze_text)
    text_state = None if plan.freeze_text else train_text(text_encoder, head, ids, target, ckpt, plan)
    frozen = encode_captions(text_encoder, ids) if plan.freeze_text else None
    rows = unet_rows(pool.classes, plan.only)
    counts = counts | ({"unet_rows": len(rows)} if plan.only else {})
    train = (unet, text_encoder, head, target, caps, frozen, noise, lat, scale, ckpt, plan, rows)
    unet_state = train_unet(*train)
    if plan.unet_restart_steps:  # 5,000 steps were 1.8 passes over the pool; this adds more, exact on resume
        restart = train_unet(*train, restart=True)
    dec_state = None if plan.init else train_decoder(vae, images, lat, ckpt, plan)
    pipe = StableDiffusionPipeline(
        unet=unet.eval(), vae=vae.eval(), text_encoder=text_encoder.eval(), tokenizer=tokenizer,
        scheduler=DDIMScheduler(**SCHEDULER_TOY), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(dest, safe_serialization=True)
    phase = lambda st: {"steps": st["step"], "seconds": round(st["elapsed"], 1),  # noqa: E731
                        "final_loss": float(np.mean(st["losses"][-50:]))}  # mean of the last 50 steps
    info = {"plan": asdict(plan), "scaling_factor": scale, "data": counts, "sources": SOURCES,
            "vae": phase(vae_state) if vae_state else f"kept from {plan.init}",
            "text": phase(text_state) if text_state else f"kept from {plan.init}",
            "unet": phase(unet_state), **({"unet_restart": phase(restart)} if plan.unet_restart_steps else {}),
            "decoder": phase(dec_state) if dec_state else f"kept from {plan.init}",
            "wall_s_this_run": round(time.perf_counter() - t0, 1)}
    (dest / "dreamsolo_toy.json").write_text(json.dumps(info, indent=2) + "\n")
    return info
