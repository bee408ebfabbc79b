"""The arms' parts, each against a known answer: the masked loss, the composite, the merge, the paired
bootstrap, the instance mask from a file or an alpha channel, and the `arms` params."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dreamsolo.config import ParamsError, build
from dreamsolo.config.sections import Arms
from dreamsolo.masks import composite
from dreamsolo.metrics import paired
from dreamsolo.training.loss import Groups, dreambooth_loss, masked_mean
from dreamsolo.training.merge import merge_lora, merge_states


class _Scheduler:
    class config:  # noqa: N801 - mirrors diffusers' scheduler.config
        num_train_timesteps = 1000
        prediction_type = "epsilon"

    @staticmethod
    def add_noise(latents, noise, t):
        return latents + 0.1 * noise


def _unet(noisy, t, encoder_hidden_states, return_dict):
    return (noisy * 0.5 + encoder_hidden_states.mean() * 0,)


def _loss(mask):
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    return dreambooth_loss(_unet, _Scheduler, latents, torch.zeros(2, 3, 5), Groups(1, 1, instance_mask=mask), gen)


def test_masked_loss_equals_the_plain_loss_under_an_all_ones_mask():
    plain, ones = _loss(None), _loss(torch.ones(1, 1, 8, 8))
    for k in ("loss", "loss_instance", "loss_prior"):
        assert torch.allclose(plain[k], ones[k], rtol=0, atol=1e-7), k


def test_masked_loss_is_the_mean_over_the_masked_region():
    err = torch.rand(3, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    mask = torch.zeros(1, 1, 8, 8)
    mask[..., :, :3] = 1.0  # the left 3 columns
    assert torch.allclose(masked_mean(err, mask), err[..., :, :3].mean(dim=(1, 2, 3)), atol=1e-6)
    assert torch.allclose(masked_mean(err, None), err.mean(dim=(1, 2, 3)))
    # a mask only changes the instance term
    masked = _loss(mask)
    assert not torch.allclose(masked["loss_instance"], _loss(None)["loss_instance"])
    assert torch.equal(masked["loss_prior"], _loss(None)["loss_prior"])


def test_composite_is_the_instance_where_the_mask_is_set_and_the_scene_elsewhere():
    rng = np.random.default_rng(0)
    inst = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    scene = Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    m = np.zeros((16, 16), dtype=np.uint8)
    m[4:12, 2:9] = 255
    out = np.asarray(composite(inst, scene, Image.fromarray(m)))
    on = m == 255
    assert np.array_equal(out[on], np.asarray(inst)[on])
    assert np.array_equal(out[~on], np.asarray(scene)[~on])
    with pytest.raises(ValueError, match="sizes differ"):
        composite(inst, scene.resize((8, 8)), Image.fromarray(m))


def test_merge_is_the_weighted_sum_of_the_deltas():
    g = torch.Generator().manual_seed(3)
    base, scene, inst = ({"w": torch.randn(3, 3, generator=g), "n": torch.tensor([7])} for _ in range(3))
    out = merge_states(base, scene, inst, 0.5, 2.0)
    want = base["w"] + 0.5 * (scene["w"] - base["w"]) + 2.0 * (inst["w"] - base["w"])
    assert torch.allclose(out["w"], want, atol=1e-6)
    assert torch.equal(out["n"], base["n"])  # integer buffers are the base's
    assert torch.allclose(merge_states(base, scene, inst, 1.0, 0.0)["w"], scene["w"], atol=1e-6)
    with pytest.raises(ValueError, match="same tensors"):
        merge_states(base, {"w": scene["w"]}, inst, 1.0, 1.0)


def test_lora_merge_applies_both_adapters_weighted():
    g = torch.Generator().manual_seed(4)
    k_a, k_b = "down.lora_A.weight", "down.lora_B.weight"
    s = {"unet": {k_a: torch.randn(2, 6, generator=g), k_b: torch.randn(5, 2, generator=g)}}
    i = {"unet": {k_a: torch.randn(3, 6, generator=g), k_b: torch.randn(5, 3, generator=g)}}
    m = merge_lora(s, i, 0.25, 1.5)["unet"]
    got = m[k_b] @ m[k_a]
    want = 0.25 * s["unet"][k_b] @ s["unet"][k_a] + 1.5 * i["unet"][k_b] @ i["unet"][k_a]
    assert torch.allclose(got, want, atol=1e-5)


def test_bootstrap_interval_of_known_data():
    assert paired.bootstrap_ci(np.full(20, 0.3), seed=1) == pytest.approx((0.3, 0.3))
    rng = np.random.default_rng(5)
    d = rng.normal(0.2, 1.0, size=4000)
    lo, hi = paired.bootstrap_ci(d, seed=2)
    half = 1.96 * d.std(ddof=1) / np.sqrt(len(d))  # the normal-theory interval of the mean
    assert lo == pytest.approx(d.mean() - half, abs=0.2 * half)
    assert hi == pytest.approx(d.mean() + half, abs=0.2 * half)
    assert paired.bootstrap_ci(d, seed=2) == (lo, hi)  # seeded
    # stratified over pairs: the mean of pair means; one pair alone is that pair's interval
    assert paired.stratified_ci([d], seed=2) == pytest.approx((lo, hi))
    s_lo, s_hi = paired.stratified_ci([np.full(10, 1.0), np.full(10, 3.0)], seed=0)
    assert (s_lo, s_hi) == pytest.approx((2.0, 2.0))


def test_verdicts_follow_the_direction_of_the_metric():
    assert paired.verdict((-0.3, -0.1), lower_is_better=True) == "win"
    assert paired.verdict((-0.3, -0.1), lower_is_better=False) == "loss"
    assert paired.verdict((0.1, 0.2), lower_is_better=True) == "loss"
    assert paired.verdict((-0.1, 0.2), lower_is_better=True) == "tie"


def _rows(pair, shift, seeds=range(6)):
    rows = []
    for kind in ("composed", "instance", "scene"):
        for s in seeds:
            rows.append({"pair": pair, "kind": kind, "prompt": f"p {kind}", "seed": s,
                         "lpips_scene": 0.5 + 0.01 * s + shift, "lpips_instance": 0.4, "clip_t": 0.2})
    return pd.DataFrame(rows)


def test_compare_arm_pairs_by_prompt_and_seed():
    method = pd.concat([_rows("a", 0.0), _rows("b", 0.0)])
    arm = pd.concat([_rows("a", -0.1), _rows("b", 0.05)])
    out = paired.compare_arm("x", arm, method, ["a", "b"])
    c = out["composed_lpips_scene"]
    assert c["pairs"]["a"]["delta"] == pytest.approx(-0.1) and c["pairs"]["a"]["verdict"] == "win"
    # paired by seed, every difference is exactly -0.1 (the seeds' own spread cancels): a zero-width interval
    assert c["pairs"]["a"]["ci"] == pytest.approx([-0.1, -0.1], abs=1e-9)
    assert c["pairs"]["b"]["delta"] == pytest.approx(0.05) and c["pairs"]["b"]["verdict"] == "loss"
    assert (c["overall"]["wins"], c["overall"]["ties"], c["overall"]["losses"]) == (1, 0, 1)
    assert c["overall"]["delta"] == pytest.approx(-0.025)
    assert out["binding"]["pairs"]["a"]["verdict"] == "tie"  # no difference at all
    with pytest.raises(ValueError, match="only one of the two sets"):
        paired.compare_arm("x", _rows("a", 0.0, seeds=range(5)), _rows("a", 0.0), ["a"])


def test_arms_params_are_checked():
    assert build(Arms, {"run": ["joint", "masked"]}, "arms").run == ("joint", "masked")
    with pytest.raises(ParamsError, match=r"arms.run\[0\]: unknown arm 'jiont' \(did you mean 'joint'\?\)"):
        build(Arms, {"run": ["jiont"]}, "arms")
    with pytest.raises(ParamsError, match="listed twice"):
        build(Arms, {"run": ["joint", "joint"]}, "arms")
    with pytest.raises(ParamsError, match=r"arms.composite.weight"):
        build(Arms, {"composite": {"weight": 0}}, "arms")
    with pytest.raises(ParamsError, match=r"arms.lora_merge.scene_wieght: unknown key"):
        build(Arms, {"lora_merge": {"scene_wieght": 1.0}}, "arms")


def test_an_arm_comparison_on_a_random_evaluator_is_labelled_random():
    """(test_arms runs on toy, whose evaluators are all trained now: the random label is checked here.)"""
    from dreamsolo.report.arms import _label

    block = {"comparisons": {"a": {"label": "composed → scene, DINO ↑", "random": True},
                             "b": {"label": "composed → scene, LPIPS ↓", "random": False}}}
    assert _label(block, "a") == "composed → scene, DINO ↑ (random)"
    assert _label(block, "b") == "composed → scene, LPIPS ↓"
