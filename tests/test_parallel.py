"""Pairs in parallel (`dreamsolo repro -j N`, dreamsolo.parallel) and device leases (dreamsolo.devices).

That `dreamsolo repro -j 2` on two one-core leases gives the bytes of a plain `dvc repro` (one pair at a
time), with the pairs' stages overlapping, each on its own core, is shown by test_team.py's fresh clone,
which reruns the whole two-pair study that way (one full repro for both properties). Here: the plan,
the leases, and a failing pair.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from studykit import E2E_PAIRS, copy_study, edit_params, make_study, repro_output, run

from dreamsolo import devices
from dreamsolo.errors import UserError
from dreamsolo.parallel import pair_of, plan


def test_device_lists_parse_and_bad_items_name_the_variable():
    assert [s.name for s in devices.parse("0, cuda:3,cpu:0-3,cpu:1+5")] == ["cuda:0", "cuda:3", "cpu:0-3", "cpu:1+5"]
    assert devices.parse("cpu:2-4")[0].ids == (2, 3, 4)
    for bad in ("gpu:0", "cpu:", "0,", "cuda:0-1", "cpu:a"):
        with pytest.raises(UserError, match="DREAMSOLO_DEVICES"):
            devices.parse(bad)
    # one file per device and occurrence, whatever the order of the list
    assert devices.lock_names(devices.parse("1,0,1")) == ["cuda1-0.lock", "cuda0-0.lock", "cuda1-1.lock"]


HOLDER = textwrap.dedent("""
    import os, sys
    from dreamsolo import devices
    slot = devices.claim()
    print(slot.name, sorted(os.sched_getaffinity(0)), os.environ["OMP_NUM_THREADS"], flush=True)
    sys.stdin.read()  # hold the lease until the test closes stdin
""")


def _holder(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", HOLDER], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_concurrent_processes_get_different_devices_and_a_third_waits(tmp_path):
    env = {**os.environ, "DREAMSOLO_DEVICES": "cpu:0,cpu:0+1", "DREAMSOLO_DEVICE_LOCKS": str(tmp_path)}
    env.pop("DREAMSOLO_NPROC", None)
    a = _holder(env)
    got_a = a.stdout.readline().split()
    b = _holder(env)
    got_b = b.stdout.readline().split()
    assert {got_a[0], got_b[0]} == {"cpu:0", "cpu:0-1"}, (got_a, got_b)
    for got in (got_a, got_b):  # bound to its cores, torch's thread count to match
        expect = ["[0]", "1"] if got[0] == "cpu:0" else ["[0,", "1]", "2"]
        assert got[1:] == expect, got
    c = _holder(env)
    time.sleep(1.5)
    assert c.poll() is None  # still waiting
    assert "busy; waiting" in _stderr_so_far(c)
    a.stdin.close()  # a's lease ends with a: c gets a's device
    a.wait(10)
    got_c = c.stdout.readline().split()
    assert got_c[0] == got_a[0], (got_a, got_c)
    for p in (b, c):
        p.stdin.close()
        p.wait(10)


def _stderr_so_far(p: subprocess.Popen) -> str:
    os.set_blocking(p.stderr.fileno(), False)
    return p.stderr.read() or ""


def test_a_gpu_lease_without_a_gpu_is_an_error_and_ddp_refuses_leases(monkeypatch):
    monkeypatch.setattr(devices, "_held", [(devices.Slot("cuda", (3,)), None)])
    with pytest.raises(UserError, match="cuda:3, but torch sees no GPU"):
        devices.check_gpu(False)
    devices.check_gpu(True)
    monkeypatch.setattr(devices, "_held", [])
    monkeypatch.setenv("DREAMSOLO_DEVICES", "0,1")
    monkeypatch.setenv("DREAMSOLO_NPROC", "2")
    with pytest.raises(UserError, match="DREAMSOLO_NPROC"):
        devices.claim()


def test_the_cpu_default_splits_the_cores_and_refuses_more_jobs_than_cores(monkeypatch):
    pytest.importorskip("torch")
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0, 1, 2, 3, 4})
    assert devices.default_for(2) == "cpu:0-1,cpu:2-4"
    assert devices.default_for(1) == "cpu:0-4"
    with pytest.raises(UserError, match="-j 6"):
        devices.default_for(6)


def test_pair_of_takes_the_longest_pair_a_key_starts_with():
    pairs = ["cat", "cat_grass", "dog"]
    assert pair_of("train_scene@cat", pairs) == "cat"
    assert pair_of("train_arm@cat_grass-joint", pairs) == "cat_grass"
    assert pair_of("train_arm@cat-joint", pairs) == "cat"
    assert pair_of("generate_priors@grass", pairs) is None and pair_of("report", pairs) is None


def test_the_plan_splits_every_stage_once_and_in_dvc_order(tmp_path):
    root = make_study(tmp_path / "s", E2E_PAIRS, {"arms.run": ["joint"]}, git=True)
    p = plan(root, E2E_PAIRS)
    every = [*p.shared, *(s for st in p.pairs.values() for s in st), *p.rest]
    assert len(every) == len(set(every))
    assert set(every) == set(_dvc_stage_names(root))
    assert {"code", "base", "generate_priors@cat", "generate_priors@grass", "arm_inputs"} <= set(p.shared)
    assert p.rest == ["report"]
    for pair, stages in p.pairs.items():
        assert all(pair_of(s, E2E_PAIRS) == pair for s in stages)
        order = [s.split("@")[0] for s in stages]
        for before, after in (("prepare", "train_scene"), ("train_scene", "train_instance"),
                              ("train_instance", "sample"), ("sample", "evaluate"), ("train_arm", "sample_arm"),
                              ("sample_arm", "evaluate_arm"), ("train_scene", "train_arm")):
            assert order.index(before) < order.index(after), (pair, order)


def _dvc_stage_names(root: Path):
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [s.name for s in repo.index.stages]


@pytest.mark.e2e
def test_a_failing_pair_names_its_log_and_the_others_land(e2e_template, tmp_path, monkeypatch):
    """On a copy of the reproduced two-pair study (conftest.py), a sampling change gives both pairs work
    to do; cat_brick's instance photo is broken, so its chain fails at `prepare` and cat_grass's lands."""
    root = copy_study(e2e_template[0], tmp_path / "s")
    monkeypatch.setenv("DREAMSOLO_DEVICE_LOCKS", str(tmp_path / "leases"))
    monkeypatch.setenv("DREAMSOLO_DEVICES", "cpu:0,cpu:1")
    monkeypatch.delenv("DREAMSOLO_NPROC", raising=False)
    edit_params(root, {"sample.guidance_scale": 5.0})  # reruns sample, sample_base, evaluate of each pair, report
    before = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    photo = next((root / "data/pairs/cat_brick").glob("instance.*"))
    good = photo.read_bytes()
    photo.write_bytes(b"not an image")
    failed = run(["dreamsolo", "repro", "-j", "2"], root, check=False)
    assert failed.returncode == 1, failed.stderr[-2000:]
    assert "dvc repro failed for cat_brick (" in failed.stderr and "cat_brick.log" in failed.stderr
    assert "instance" in (root / ".dvc/tmp/dreamsolo-repro/cat_brick.log").read_text()  # names the photo
    stages = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert stages["evaluate@cat_grass"] != before["evaluate@cat_grass"]  # the other pair landed, new settings
    brick = [s for s in before if s.endswith("@cat_brick")]
    assert brick and all(stages[s] == before[s] for s in brick)  # nothing of the failed pair recorded
    assert stages["report"] == before["report"]  # the last step does not run after a failure
    photo.write_bytes(good)
    again = repro_output(root, run(["dreamsolo", "repro", "-j", "2"], root))
    assert "Running stage 'sample@cat_brick'" in again and "Running stage 'report'" in again
    assert "Stage 'sample@cat_grass' didn't change, skipping" in again  # resumed, not redone
    assert "Running stage 'sample@cat_grass'" not in again
    assert run(["dvc", "status"], root).stdout.strip() == "Data and pipelines are up to date."


def test_none_turns_the_leases_off_and_stops_the_default(monkeypatch, tmp_path):
    monkeypatch.setenv("DREAMSOLO_DEVICE_LOCKS", str(tmp_path))
    monkeypatch.setenv("DREAMSOLO_DEVICES", "none")
    monkeypatch.setattr(devices, "_held", [])
    assert devices.claim() is None and devices.set_default(2) == "none"
    assert not list(tmp_path.iterdir())  # no lease file taken
    monkeypatch.setenv("DREAMSOLO_DEVICES", "cpu:0")
    assert devices.set_default(2) == "cpu:0"  # the user's list is kept (no claim here: it would bind pytest)
