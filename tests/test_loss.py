"""The DreamBooth loss: instance and prior terms, lambda, replay, and the prediction target."""

from __future__ import annotations

import pytest
import torch
from diffusers import DDPMScheduler

from dreamsolo.models.tiny import SCHEDULER
from dreamsolo.training.loss import Groups, dreambooth_loss


class FixedUNet(torch.nn.Module):
    """Predicts a fixed tensor, so the expected loss can be written down by hand."""

    def __init__(self, pred: torch.Tensor) -> None:
        super().__init__()
        self.pred = pred

    def forward(self, x, t, encoder_hidden_states=None, return_dict=False):
        return (self.pred,)


def expected(pred, latents, sched, groups, seed, target="epsilon"):
    gen = torch.Generator().manual_seed(seed)
    noise = torch.randn(latents.shape, generator=gen)
    t = torch.randint(0, sched.config.num_train_timesteps, (latents.shape[0],), generator=gen)
    tgt = noise if target == "epsilon" else sched.get_velocity(latents, noise, t)
    a, b = groups.n_instance, groups.n_instance + groups.n_prior
    inst = ((pred[:a] - tgt[:a]) ** 2).mean()
    prior = ((pred[a:b] - tgt[a:b]) ** 2).mean()
    replay = ((pred[b:] - tgt[b:]) ** 2).mean() if groups.n_replay else torch.tensor(0.0)
    return inst, prior, replay


@pytest.mark.parametrize("prior_weight", [0.0, 1.0, 2.5])
def test_instance_and_prior_terms_with_lambda(prior_weight):
    sched = DDPMScheduler.from_config(SCHEDULER)
    latents = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pred = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    groups = Groups(2, 2, prior_weight=prior_weight)
    parts = dreambooth_loss(FixedUNet(pred), sched, latents, torch.zeros(4, 77, 32), groups,
                            torch.Generator().manual_seed(3))
    inst, prior, _ = expected(pred, latents, sched, groups, 3)
    assert parts["loss_instance"].item() == pytest.approx(inst.item(), rel=1e-6)
    assert parts["loss_prior"].item() == pytest.approx(prior.item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx(inst.item() + prior_weight * prior.item(), rel=1e-6)
    assert inst.item() != pytest.approx(prior.item())  # the two terms really are different examples


def test_replay_term_has_its_own_weight():
    sched = DDPMScheduler.from_config(SCHEDULER)
    latents = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pred = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    groups = Groups(1, 1, 1, prior_weight=1.0, replay_weight=0.5)
    parts = dreambooth_loss(FixedUNet(pred), sched, latents, torch.zeros(3, 77, 32), groups,
                            torch.Generator().manual_seed(4))
    inst, prior, replay = expected(pred, latents, sched, groups, 4)
    assert parts["loss_replay"].item() == pytest.approx(replay.item(), rel=1e-6)
    assert parts["loss"].item() == pytest.approx((inst + prior + 0.5 * replay).item(), rel=1e-6)


def test_v_prediction_target():
    sched = DDPMScheduler.from_config({**SCHEDULER, "prediction_type": "v_prediction"})
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pred = torch.zeros(2, 4, 8, 8)
    groups = Groups(1, 1)
    parts = dreambooth_loss(FixedUNet(pred), sched, latents, torch.zeros(2, 77, 32), groups,
                            torch.Generator().manual_seed(5))
    inst, prior, _ = expected(pred, latents, sched, groups, 5, target="v")
    assert parts["loss_instance"].item() == pytest.approx(inst.item(), rel=1e-6)


def test_term_means_do_not_depend_on_batch_size():
    """lambda weighs the *mean* prior term, so doubling the batch keeps the loss scale."""
    sched = DDPMScheduler.from_config(SCHEDULER)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    pred = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    one = dreambooth_loss(FixedUNet(pred), sched, latents, torch.zeros(2, 77, 32), Groups(1, 1),
                          torch.Generator().manual_seed(6))
    gen = torch.Generator().manual_seed(6)
    noise = torch.randn(latents.shape, generator=gen)
    assert one["loss_instance"].item() == pytest.approx(((pred[0] - noise[0]) ** 2).mean().item(), rel=1e-6)
