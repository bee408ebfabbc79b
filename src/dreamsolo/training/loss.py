"""The DreamBooth step with prior preservation (Ruiz et al., CVPR 2023, eq. 2).

    L = E ||eps - eps_theta(z_t, t, c)||^2 + lambda * E ||eps - eps_theta(z'_t, t', c_pr)||^2

Instance, prior (and optional Stage-I replay, composite and second-class prior) examples go through the
UNet as one batch; each term is the mean over its own examples, so lambda means the same for any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dreamsolo.models.family import Cond, unet_kwargs


@dataclass(frozen=True)
class Groups:
    """Sizes of the contiguous instance | prior | replay | composite | replay-prior blocks of a batch, their
    weights, and the instance mask (latent-resolution weights of the instance term; None = unmasked)."""

    n_instance: int
    n_prior: int
    n_replay: int = 0
    prior_weight: float = 1.0
    replay_weight: float = 0.0
    n_composite: int = 0
    composite_weight: float = 0.0
    n_replay_prior: int = 0  # the joint arm: the scene class's priors, in the prior term with the instance's
    instance_mask: torch.Tensor | None = None


def masked_mean(err: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Per-example mean of `err` (N, C, H, W) over C, H, W, weighted by `mask` (1, 1, H, W) where given:
    sum(mask * err) / sum(mask), so an all-ones mask gives exactly the plain mean (Break-A-Scene's masked loss)."""
    if mask is None:
        return err.mean(dim=(1, 2, 3))
    w = mask.to(err.dtype).expand(err.shape[0], err.shape[1], -1, -1)
    return (err * w).sum(dim=(1, 2, 3)) / w.sum(dim=(1, 2, 3)).clamp_min(1e-8)


def dreambooth_loss(
    unet, noise_scheduler, latents: torch.Tensor, text: Cond, groups: Groups,
    generator: torch.Generator, rows: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Noise the (already scaled) latents at random timesteps, predict, and weight the MSE terms.
    `rows`: this process's rows of a global batch (data-parallel): noise and timesteps are drawn for the
    whole batch first, so N processes draw what one process would. `text`: the UNet's conditioning per row,
    SD's hidden states or SDXL's (hidden states, pooled text_embeds, size time_ids): models.family."""
    n = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = noise_scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (n,), generator=generator, device=latents.device)
    if rows is not None:
        latents, noise, t, text = latents[rows], noise[rows], t[rows], text[rows]
    noisy = noise_scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, **unet_kwargs(text), return_dict=False)[0]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    err = (pred.float() - target.float()).pow(2)
    g = groups
    a = g.n_instance
    per_example = err.mean(dim=(1, 2, 3))
    ends = {}
    at = a
    for name, size in (("prior", g.n_prior), ("replay", g.n_replay), ("composite", g.n_composite),
                       ("replay_prior", g.n_replay_prior)):
        ends[name] = (at, at + size)
        at += size
    zero = per_example.new_zeros(())
    block = lambda name: per_example[slice(*ends[name])]  # noqa: E731
    priors = torch.cat([block("prior"), block("replay_prior")])
    parts = {
        "loss_instance": masked_mean(err[:a], g.instance_mask).mean(),
        "loss_prior": priors.mean() if len(priors) else zero,
        "loss_replay": block("replay").mean() if g.n_replay else zero,
    }
    parts["loss"] = (parts["loss_instance"] + g.prior_weight * parts["loss_prior"]
                     + g.replay_weight * parts["loss_replay"])
    if g.n_composite:  # only a stage that has the term logs it
        parts["loss_composite"] = block("composite").mean()
        parts["loss"] = parts["loss"] + g.composite_weight * parts["loss_composite"]
    return parts
