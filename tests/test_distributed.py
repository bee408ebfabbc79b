"""Data-parallel training (dreamsolo.distributed): `DREAMSOLO_NPROC=2` runs a training stage as two gloo
processes under `accelerate launch`, and gives the weights one process gives at the same (global) batch."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch
from safetensors.torch import load_file

from studykit import env, make_study, run

from dreamsolo.distributed import World, check, launch_argv, rows

PAIR = "cat_grass"
STAGE = f"train_scene@{PAIR}"


def test_rows_split_each_block_of_the_global_batch():
    # 3 blocks (instance | prior | replay) of global size 4 = 2 ranks x 2
    assert rows(3, 2, World(0, 2, 0)).tolist() == [0, 1, 4, 5, 8, 9]
    assert rows(3, 2, World(1, 2, 1)).tolist() == [2, 3, 6, 7, 10, 11]
    assert rows(2, 1, World(0, 1, 0)).tolist() == [0, 1]  # one process: every row


def test_launch_is_accelerate_with_the_same_command():
    argv = launch_argv(8, ["stages/train_scene.py", "--pair", PAIR])
    assert os.path.basename(argv[0]) == "accelerate" and argv[1] == "launch"
    assert argv[argv.index("--num_processes") + 1] == "8"
    assert argv[-3:] == ["stages/train_scene.py", "--pair", PAIR]


def weights(root) -> dict[str, torch.Tensor]:
    folder = root / "models" / PAIR / "scene"
    return {**{f"unet.{k}": v for k, v in load_file(folder / "unet/diffusion_pytorch_model.safetensors").items()},
            **{f"te.{k}": v for k, v in load_file(folder / "text_encoder/model.safetensors").items()}}


@pytest.mark.e2e
def test_two_processes_give_the_weights_of_one_at_the_same_global_batch(tmp_path):
    """Stage I of the embedded default (toy, text encoder trained too), batch 2, 4 steps: one process,
    then two gloo processes of one row each, forced to rerun with the same params. A rank training on
    the other's rows, or both on the same rows, moves the weights as much as training itself does."""
    root = make_study(tmp_path / "study", [PAIR], {"model.preset": "toy", "presets.toy.train_steps": 4,
                                                   "train.batch_size": 2}, git=True)
    run(["dvc", "repro", STAGE], root)
    one, loss_one = weights(root), losses(root)
    base = load_file(root / "models/base/toy/unet/diffusion_pytorch_model.safetensors")

    e = env(root) | {"DREAMSOLO_NPROC": "2", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["dvc", "repro", "-f", "-s", STAGE], cwd=root, env=e, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    two, loss_two = weights(root), losses(root)

    moved = max((one[f"unet.{k}"] - v).abs().max().item() for k, v in base.items())
    gap = max((one[k] - two[k]).abs().max().item() for k in one)
    assert moved > 1e-5, "training did not move the weights: nothing is compared"
    # float noise (the batch's sum in another order, Adam dividing by tiny second moments) stays ~1 % of the
    # movement (1.4 % seen on one thread per process); the wrong rows on a rank move it as far as training
    assert gap < moved * 0.1, f"1 x batch 2 and 2 x batch 1 differ by {gap:g} (training moved them {moved:g})"
    assert loss_two == pytest.approx(loss_one, rel=1e-4)  # the logged loss: the mean over both ranks' rows

    from studykit import mlflow_client

    client, exp_id = mlflow_client(root)
    logged = client.search_runs([exp_id], f"tags.dvc_stage = '{STAGE}' and attributes.status = 'FINISHED'")
    assert len(logged) == 2  # one run per invocation: rank 1 logged nothing
    assert STAGE not in json.loads(run(["dvc", "status", "--json"], root).stdout)  # same params: nothing to rerun


def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    from dreamsolo.errors import UserError

    with pytest.raises(UserError, match="train.batch_size 3 .* DREAMSOLO_NPROC=2"):
        check(3, False, World(0, 2, 0), "scene cat_grass")
    with pytest.raises(UserError, match="eval_every"):
        check(2, True, World(1, 2, 1), "scene cat_grass")
    check(3, True, World(0, 1, 0), "scene cat_grass")  # one process: anything goes


def losses(root) -> list[float]:
    import csv

    rows = list(csv.DictReader(open(root / "reports/train" / PAIR / "scene.csv")))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]  # one row per step, written once
    return [float(r["loss"]) for r in rows]
