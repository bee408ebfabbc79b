"""The DreamBooth step with prior preservation (Ruiz et al., CVPR 2023, eq. 2).

    L = E ||eps - eps_theta(z_t, t, c)||^2 + lambda * E ||eps - eps_theta(z'_t, t', c_pr)||^2

Instance, prior (and optional Stage-I replay) examples go through the UNet as one batch; each
term is the mean over its own examples, so lambda means the same for any batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Groups:
    """Sizes of the contiguous instance | prior | replay blocks of a batch, and their weights."""

    n_instance: int
    n_prior: int
    n_replay: int = 0
    prior_weight: float = 1.0
    replay_weight: float = 0.0


def dreambooth_loss(
    unet, noise_scheduler, latents: torch.Tensor, text: torch.Tensor, groups: Groups,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Noise the (already scaled) latents at random timesteps, predict, and weight the MSE terms."""
    n = latents.shape[0]
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    steps = noise_scheduler.config.num_train_timesteps
    t = torch.randint(0, steps, (n,), generator=generator, device=latents.device)
    noisy = noise_scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states=text, return_dict=False)[0]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, t)
    else:
        target = noise
    per_example = (pred.float() - target.float()).pow(2).mean(dim=(1, 2, 3))
    a, b = groups.n_instance, groups.n_instance + groups.n_prior
    zero = per_example.new_zeros(())
    parts = {
        "loss_instance": per_example[:a].mean(),
        "loss_prior": per_example[a:b].mean() if groups.n_prior else zero,
        "loss_replay": per_example[b:].mean() if groups.n_replay else zero,
    }
    parts["loss"] = (parts["loss_instance"] + groups.prior_weight * parts["loss_prior"]
                     + groups.replay_weight * parts["loss_replay"])
    return parts
