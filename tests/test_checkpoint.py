"""The checkpoint module on a toy model: exact save/restore round trip, pruning, which checkpoint
`latest` trusts, and a state file that loads without unpickling."""

from __future__ import annotations

import json
import math

import torch


def _toy(seed: int = 0):
    torch.manual_seed(seed)
    net = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 3))
    gen = torch.Generator().manual_seed(seed)
    return net, opt, sched, gen


def _train(net, opt, sched, gen, n: int) -> None:
    for _ in range(n):
        loss = net(torch.randn(2, 4, generator=gen)).pow(2).mean()
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad()


def test_checkpoint_roundtrip_is_exact_and_pruned(tmp_path):
    from dreamsolo.training import checkpoint

    net, opt, sched, gen = _toy()
    trainable = dict(net.named_parameters())
    rows = []
    for step in (1, 2, 3):
        _train(net, opt, sched, gen, 1)
        rows.append({"step": step, "loss": 0.1 * step + 1e-17, "lr": sched.get_last_lr()[0]})
        checkpoint.save(tmp_path, step, "fp", trainable, opt, sched, gen, keep=2, history=rows)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000002", "step-0000003"]
    _train(net, opt, sched, gen, 2)
    want = {k: v.detach().clone() for k, v in net.state_dict().items()}

    net2, opt2, sched2, gen2 = _toy(seed=1)  # different weights and RNG until restored
    found = checkpoint.latest(tmp_path, "fp")
    assert found is not None and found.name == "step-0000003"
    assert checkpoint.restore(found, dict(net2.named_parameters()), opt2, sched2, gen2) == 3
    assert checkpoint.history(found) == rows  # floats exact, no row missing
    _train(net2, opt2, sched2, gen2, 2)
    assert all(torch.equal(want[k], v) for k, v in net2.state_dict().items())


def test_latest_drops_partial_foreign_and_temporary_checkpoints(tmp_path):
    from dreamsolo.training import checkpoint

    net, opt, sched, gen = _toy()
    trainable = dict(net.named_parameters())
    checkpoint.save(tmp_path, 5, "fp", trainable, opt, sched, gen, keep=5, history=[])
    checkpoint.save(tmp_path, 10, "other-config", trainable, opt, sched, gen, keep=5, history=[])
    (tmp_path / ".step-0000015.tmp").mkdir()  # killed while writing
    partial = tmp_path / "step-0000020"  # a complete-looking folder without its files
    partial.mkdir()
    (partial / "meta.json").write_text(json.dumps({"step": 20, "fingerprint": "fp"}))
    garbled = tmp_path / "step-0000025"
    garbled.mkdir()
    (garbled / "meta.json").write_text("{not json")

    found = checkpoint.latest(tmp_path, "fp")
    assert found is not None and found.name == "step-0000005"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-0000005"]
    assert checkpoint.latest(tmp_path / "missing", "fp") is None
    assert checkpoint.history(None) == []


def test_checkpoint_state_loads_without_unpickling(tmp_path):
    """state.pt must load under torch.load(weights_only=True): no arbitrary objects inside."""
    from dreamsolo.training import checkpoint

    net, opt, sched, gen = _toy()
    _train(net, opt, sched, gen, 1)
    scaler = torch.amp.GradScaler("cpu", enabled=True)
    ckpt = checkpoint.save(tmp_path, 1, "fp", dict(net.named_parameters()), opt, sched, gen, keep=1,
                           history=[{"step": 1, "loss": math.pi}], scaler=scaler)
    state = torch.load(ckpt / "state.pt", weights_only=True)
    assert set(state) >= {"optimizer", "lr_scheduler", "generator", "torch_rng", "scaler"}
    assert state["scaler"]["scale"] == scaler.get_scale()
