"""The sine arm (SINE's patch-based fine-tuning: training.patches, models.position): the position grid, the
hook that adds it, the patches and their boxes in a batch; and the arm end to end on the two-pair test study."""

from __future__ import annotations

import json
import math

import pytest
import torch
from studykit import E2E_PAIRS, copy_study, edit_params, ran, run

from dreamsolo.training.inputs import Cached, make_batch
from dreamsolo.models.position import PatchPosition, sinusoidal_grid
from dreamsolo.training.patches import PatchSpec, draw_boxes


def test_the_grid_is_sines_sinusoidal_encoding():
    g = sinusoidal_grid(16, 6)  # 8 channels per axis: 4 sin, 4 cos at 10000^(-i/3)
    assert g.shape == (16, 6, 6)
    for i in range(4):
        f = 10000 ** (-i / 3)
        for pos in range(6):  # positions 1..6 (0 is SINE's padding index)
            assert g[i, 0, pos] == pytest.approx(math.sin((pos + 1) * f), abs=1e-6)  # x: along the columns
            assert g[4 + i, 3, pos] == pytest.approx(math.cos((pos + 1) * f), abs=1e-6)
            assert g[8 + i, pos, 0] == pytest.approx(math.sin((pos + 1) * f), abs=1e-6)  # y: along the rows
    assert torch.equal(g[:8, 0], g[:8, 5]) and torch.equal(g[8:, :, 0], g[8:, :, 5])
    with pytest.raises(ValueError, match="divisible by 4"):
        sinusoidal_grid(18, 4)


def test_the_hook_adds_the_whole_grid_or_each_rows_patch():
    pos = PatchPosition(8, 8)
    x = torch.zeros(3, 8, 4, 4)
    whole = pos(None, None, x)
    assert torch.allclose(whole[0], torch.nn.functional.interpolate(pos.grid[None], (4, 4), mode="bilinear",
                                                                    align_corners=True)[0])
    pos.boxes = torch.tensor([[0, 0, 8, 8], [0, 4, 4, 8], [4, 0, 8, 4]])  # y0, x0, y1, x1
    rows = pos(None, None, x)
    assert torch.allclose(rows[0], whole[0])  # the full box is the whole photo
    assert torch.allclose(rows[1], pos.grid[:, 0:4, 4:8]) and torch.allclose(rows[2], pos.grid[:, 4:8, 0:4])
    assert not torch.allclose(rows[1], rows[2])  # two places, two encodings
    pos.boxes = torch.tensor([[0, 0, 8, 8]])
    with pytest.raises(RuntimeError, match="1 rows, the batch has 3"):
        pos(None, None, x)


def test_boxes_follow_the_settings():
    spec = PatchSpec(0.25, 0.5, 200, 16)
    boxes = draw_boxes(spec, 16, torch.Generator().manual_seed(0))
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    assert boxes.min() >= 0 and boxes[:, 2:].max() <= 16
    assert h.min() >= 4 and h.max() <= 8 and w.min() >= 4 and w.max() <= 8
    assert (h != w).any()  # height and width drawn apart, as SINE
    again = draw_boxes(spec, 16, torch.Generator().manual_seed(0))
    assert torch.equal(boxes, again)


def test_a_batch_puts_patches_on_the_instance_rows_and_the_whole_photo_elsewhere():
    lat = lambda n, v: {"mean": torch.full((n, 4, 2, 2), float(v)), "std": torch.zeros(n, 4, 2, 2)}  # noqa: E731
    pos = PatchPosition(8, 4)
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 4]])
    c = Cached(image=lat(1, 9), prior=lat(3, 5), replay=lat(1, 7), text=torch.zeros(3, 77, 8),
               ids=torch.zeros(3, 77), rows={"instance": 0, "prior": 1, "replay": 2},
               patches={**{k: torch.stack([torch.full((4, 2, 2), 1.0), torch.full((4, 2, 2), 2.0)]) if k == "mean"
                           else torch.zeros(2, 4, 2, 2) for k in ("mean", "std")}, "boxes": boxes}, position=pos)
    latents, _ = make_batch(c, 6, 1.0, torch.Generator().manual_seed(0))
    inst = latents[:6, 0, 0, 0]
    assert set(inst.tolist()) == {1.0, 2.0} and inst.tolist() != inst.flip(0).tolist()  # patches, never the photo (9)
    assert latents[6:12].eq(5).all() and latents[12:].eq(7).all()
    assert pos.boxes.shape == (18, 4)
    for v, b in zip(inst.tolist(), pos.boxes[:6].tolist()):
        assert b == boxes[int(v) - 1].tolist()  # each patch row carries its own box
    assert (pos.boxes[6:] == torch.tensor([0, 0, 4, 4])).all()


@pytest.mark.e2e
def test_the_sine_arm_trains_samples_and_is_compared(e2e_template, tmp_path):
    from dreamsolo.models.loading import load_pipeline

    root = copy_study(e2e_template[0], tmp_path / "study")
    edit_params(root, {"arms.run": ["sine"], "arms.sine.patches": 8})
    out = run(["dvc", "repro"], root)
    stages = {f"{s}@{p}-sine" for s in ("train_arm", "sample_arm", "evaluate_arm") for p in E2E_PAIRS}
    assert ran(out.stdout) == stages | {"code", "report"}, out.stdout  # Stage I and II are the method's, not rerun
    for pair in E2E_PAIRS:
        model = root / "models" / pair / "arms" / "sine"
        marker = json.loads((model / "patch_position.json").read_text())
        vae = json.loads((root / "models/base/tiny/vae/config.json").read_text())
        assert marker["grid"] == 2 * 64 // 2 ** (len(vae["block_out_channels"]) - 1)  # twice the latent side
        meta = json.loads((model / "train_meta.json").read_text())
        assert meta["settings"]["replay_weight"] == json.loads(
            (root / "models" / pair / "instance" / "train_meta.json").read_text())["settings"]["replay_weight"]
        pipe = load_pipeline(model)  # the grid comes back with the weights: samples see it
        assert len(pipe.unet.conv_in._forward_hooks) == 1
        assert not load_pipeline(root / "models" / pair / "instance").unet.conv_in._forward_hooks
    arms = json.loads((root / "reports/metrics.json").read_text())["arms"]
    assert arms["arms"] == ["sine"] and "composed_lpips_scene" in arms["vs_method"]["sine"]
    assert "| sine |" in (root / "reports/report.md").read_text()
