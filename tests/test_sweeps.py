"""Sweeps: sweeps.yaml checked key by key, and a 2x2 sweep on one pair through DVC's real queue
(`dreamsolo sweep t -j 2`): four experiments, a report whose numbers are the experiments' metrics,
MLflow runs tagged with the point, and a resumed sweep that reruns only the missing point."""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from dreamsolo.sweeps.queue import declared_params, queue_states, worker_pid_files
from dreamsolo.sweeps.spec import SweepError, load_sweep
from studykit import REPO, copy_study, edit_params, env, make_study, mlflow_client, run

GRID = """t:
  pairs: [cat_grass]
  grid:
    train_instance.defaults.lr: [1.0e-5, 1.0e-4]
    train_instance.defaults.prior_weight: [0.5, 1.0]
"""
# what `swept` runs: two points are enough for the queue, the tags, the report and a resume (the grid's
# product is checked on GRID by test_points_are_named_by_their_settings_and_random_search_is_seeded)
SWEPT = GRID.replace("    train_instance.defaults.prior_weight: [0.5, 1.0]\n", "")


@pytest.fixture(scope="module")
def checked_against(tmp_path_factory):
    """preset -> a function giving a sweeps.yaml's error on a two-pair study of that preset; one study and
    one read of dvc.yaml's params per preset for the module (only sweeps.yaml changes from case to case)."""
    studies: dict[str, tuple[Path, set[str]]] = {}

    def sweep_error(text: str, name: str = "s", preset: str = "tiny") -> str:
        if preset not in studies:
            root = make_study(tmp_path_factory.mktemp(f"sweeps-{preset}") / "study", ["cat_grass", "cup_brick"],
                              {"model.preset": preset}, git=True)
            studies[preset] = root, declared_params(root)
        root, declared = studies[preset]
        (root / "sweeps.yaml").write_text(text)
        with pytest.raises(SweepError) as e:
            load_sweep(root, name, declared)
        return str(e.value)

    return sweep_error


BAD = {
    "unknown key": ("s:\n  grid:\n    train_instance.defaults.lrr: [1.0e-5, 1.0e-4]\n",
                    "sweeps.yaml: s: point lrr=1e-05: train_instance.defaults.lrr: unknown key (did you mean 'lr'?)"),
    "no such section": ("s:\n  grid:\n    trian.seed: [0, 1]\n", "sweeps.yaml: s: trian.seed: no such params key"),
    "empty grid": ("s:\n  grid: {}\n", "sweeps.yaml: s.grid: empty grid"),
    "empty values": ("s:\n  grid:\n    train.seed: []\n", "sweeps.yaml: s.grid.train.seed: empty list"),
    "not read by a stage": ("s:\n  grid:\n    tracking.log_weights: [reference, artifact]\n",
                            "sweeps.yaml: s: tracking.log_weights: no stage reads this key"),
    "wrong type": ("s:\n  grid:\n    train.seed: [0, fast]\n",
                   "sweeps.yaml: s: train.seed: value 'fast' is str, params.yaml has int (0)"),
    "bad value": ("s:\n  grid:\n    train_instance.defaults.lr: [1.0e-5, -1.0]\n",
                  "sweeps.yaml: s: point lr=-1: train_instance.defaults.lr: must be > 0"),
    "unknown pair": ("s:\n  pairs: [cat_grss]\n  grid:\n    train.seed: [0, 1]\n",
                     "sweeps.yaml: s.pairs: 'cat_grss' is not a pair of params.yaml (did you mean 'cat_grass'?)"),
    "bad pairs": ("s:\n  pairs: plants\n  grid:\n    train.seed: [0, 1]\n",
                  "sweeps.yaml: s.pairs: 'plants' is not `all`, a category"),
    "grid and random": ("s:\n  grid: {train.seed: [0]}\n  random: {count: 2, space: {train.seed: [0, 1]}}\n",
                        "sweeps.yaml: s: give exactly one of `grid` and `random`"),
    "bad range": ("s:\n  random: {count: 2, space: {train_instance.defaults.lr: {low: 1.0, high: 0.1}}}\n",
                  "sweeps.yaml: s.random.space.train_instance.defaults.lr: low and high must be numbers with low < high"),
    "unknown sweep key": ("s:\n  gird: {train.seed: [0]}\n", "sweeps.yaml: s.gird: unknown key (did you mean 'grid'?)"),
    "no such sweep": ("other:\n  grid: {train.seed: [0, 1]}\n", "sweeps.yaml: no sweep 's' (known: other)"),
}


@pytest.mark.parametrize("case", BAD, ids=list(BAD))
def test_each_bad_sweep_file_gets_its_message(checked_against, case):
    text, start = BAD[case]
    msg = checked_against(text)
    assert msg.startswith(start), msg
    assert "\n" not in msg


def test_a_key_a_higher_layer_overrides_is_refused_naming_the_layer(checked_against):
    """On toy, presets.toy.train_instance sets lr over train_instance.defaults: sweeping the defaults'
    lr would make identical points."""
    msg = checked_against("s:\n  grid:\n    train_instance.defaults.lr: [1.0e-5, 1.0e-4]\n", preset="toy")
    assert msg.startswith("sweeps.yaml: s: train_instance.defaults.lr: every value gives the swept pairs the "
                          "same settings (overridden by presets.toy.train_instance)"), msg
    msg = checked_against("s:\n  pairs: animal\n  grid:\n    train_instance.by_category.object.lr: [1.0e-5, 1.0e-4]\n")
    assert "no swept pair is of category 'object'" in msg, msg


def test_points_are_named_by_their_settings_and_random_search_is_seeded(tmp_path):
    root = make_study(tmp_path / "study", ["cat_grass", "cup_brick"])
    (root / "sweeps.yaml").write_text(
        GRID + "r:\n  pairs: object\n  random:\n    count: 3\n    seed: 7\n    space:\n"
        "      train_instance.defaults.lr: {low: 1.0e-6, high: 1.0e-4, log: true}\n"
        "      train_instance.by_category.object.steps: [2, 3, 4]\n")
    t = load_sweep(root, "t")
    assert [p.settings for p in t.points] == [
        {"train_instance.defaults.lr": lr, "train_instance.defaults.prior_weight": w}
        for lr in (1e-5, 1e-4) for w in (0.5, 1.0)]
    assert len({p.name for p in t.points}) == 4 and t.targets == ["evaluate@cat_grass"]
    r1, r2 = load_sweep(root, "r"), load_sweep(root, "r")
    assert r1.pairs == ("cup_brick",) and len(r1.points) == 3
    assert [p.name for p in r1.points] == [p.name for p in r2.points]  # same seed, same points
    assert all(1e-6 <= p.settings["train_instance.defaults.lr"] <= 1e-4 for p in r1.points)
    # a key the file lacks (by_category.object has no steps) is added with Hydra's ++
    assert "++train_instance.by_category.object.steps=" + str(r1.points[0].settings[
        "train_instance.by_category.object.steps"]) in r1.points[0].set_params()


@pytest.fixture(scope="module")
def swept(e2e_template, tmp_path_factory):
    """A copy of the reproduced two-pair study (conftest.e2e_template) committed with its lock, then
    `dreamsolo sweep t -j 2`: two points on cat_grass."""
    root = copy_study(e2e_template[0], tmp_path_factory.mktemp("sweep") / "study")
    with (root / ".gitignore").open("a") as f:
        f.write("/mlflow.db\n/mlruns/\n/reports/sweeps/\n")
    (root / "sweeps.yaml").write_text(SWEPT)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "study, reproduced"], root)
    first = run(["dreamsolo", "sweep", "t", "-j", "2"], root, timeout=1200)
    return root, first


def _exp_metrics(root: Path) -> dict[str, dict]:
    import dvc.api

    return {r["Experiment"]: r for r in dvc.api.exp_show(str(root)) if r.get("Experiment")}


@pytest.mark.e2e
def test_a_sweep_runs_one_experiment_per_point_and_the_report_reads_them(swept):
    root, first = swept
    assert "2 points on 1 pair(s); 0 done, 2 queued now" in first.stdout, first.stdout
    names = {p.name for p in load_sweep(root, "t").points}
    exps = _exp_metrics(root)
    assert names <= set(exps)
    df = pd.read_csv(root / "reports/sweeps/t/results.csv")
    assert set(df["point"]) == names | {"baseline"} and len(df) == 3
    for _, row in df[df["point"] != "baseline"].iterrows():
        exp = exps[row["point"]]
        assert exp["train_instance.defaults.lr"] == row["train_instance.defaults.lr"]
        for col, key in (("lpips_instance", "by_kind.instance.lpips_instance"),
                         ("class_drift", "by_kind.class_instance.lpips_base"),
                         ("scene_kept", "by_kind.scene.lpips_scene"), ("clip_t", "metrics.clip_t")):
            key = f"reports/pairs/cat_grass.json:{key}"  # the study has two pairs: DVC names the file
            assert math.isclose(row[col], exp[f"{key}.mean"], rel_tol=1e-9), (row["point"], col)
            assert math.isclose(row[f"{col}_std"], exp[f"{key}.std"], rel_tol=1e-9), (row["point"], col)
    # the points differ where they should: Stage II's lr changes what the <S> prompt draws
    assert df["lpips_instance"].nunique() > 1
    # samples.csv (the findings page's bootstrap): one row per point, pair and seed, whose means are results.csv's
    samples = pd.read_csv(root / "reports/sweeps/t/samples.csv")
    assert len(samples) == len(df) * samples["seed"].nunique() and samples["seed"].nunique() >= 2
    means = samples.groupby(["point", "pair"])[["lpips_instance", "class_drift"]].mean()
    for _, row in df.iterrows():
        for col in ("lpips_instance", "class_drift"):
            assert math.isclose(means.loc[(row["point"], row["pair"]), col], row[col], rel_tol=1e-9), (row["point"], col)
    page = (root / "reports/sweeps/t/index.html").read_text()
    assert "by_category block" in page and "random evaluators" in page and "metrics_vs_lr.png" in page
    assert (root / "reports/sweeps/t/tradeoff.png").stat().st_size > 5000


@pytest.mark.e2e
def test_each_point_is_tagged_in_mlflow_and_the_report_is_one_run(swept):
    root, _ = swept
    client, exp_id = mlflow_client(root)
    runs = client.search_runs([exp_id], "tags.sweep = 't'")
    points = {p.name: p.label for p in load_sweep(root, "t").points}
    trained = [r for r in runs if r.data.tags["stage"] == "train_instance"]
    assert sorted(r.data.tags["sweep_point"] for r in trained) == sorted(f"{n}: {lab}" for n, lab in points.items())
    # -j 2 leased each stage its own cores (dreamsolo.devices): stages that ran at once ran apart
    staged = [r for r in runs if r.data.tags["stage"] != "sweep_report"]
    assert all(r.data.tags.get("device", "").startswith("cpu:") for r in staged)
    overlapping = [(a, b) for a, b in itertools.combinations(staged, 2)
                   if a.info.start_time < b.info.end_time and b.info.start_time < a.info.end_time]
    assert overlapping, "no two stages of the -j 2 sweep ran at once"
    assert all(a.data.tags["device"] != b.data.tags["device"] for a, b in overlapping)
    reports = [r for r in runs if r.data.tags["stage"] == "sweep_report"]
    assert len(reports) == 1
    arts = {a.path for a in client.list_artifacts(reports[0].info.run_id, "sweeps/t")}
    assert {"sweeps/t/index.html", "sweeps/t/index.md", "sweeps/t/by_category.yaml"} <= arts


def _kill_workers_once_running(root: Path, name: str, proc: subprocess.Popen, limit_s: float = 300) -> bool:
    """SIGKILL every live queue worker of `root` as soon as DVC shows point `name` Running."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s and proc.poll() is None:
        time.sleep(1)
        if queue_states(root).get(name) != "Running":
            continue
        pids = [json.loads(f.read_text())["pid"] for f in worker_pid_files(root)]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return bool(pids)
    return False


@pytest.mark.e2e
def test_an_interrupted_sweep_resumes_with_only_the_missing_point(swept):
    root, _ = swept
    sweep = load_sweep(root, "t")
    gone = sweep.points[1].name
    before = {n: r["rev"] for n, r in _exp_metrics(root).items()}
    run(["dvc", "exp", "remove", gone], root)  # as if the sweep had stopped before this point finished
    shutil.rmtree(root / "reports/sweeps/t")
    # and its queue worker is killed under it: DVC then shows the point Running for ever; the sweep must see
    # that no process runs it, queue it again and finish (CI once waited 20 minutes on such a point)
    proc = subprocess.Popen(["dreamsolo", "sweep", "t", "-j", "2"], cwd=root, env=env(root), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    killed = _kill_workers_once_running(root, gone, proc)
    try:  # the point takes about 35 s here; a sweep waiting on a dead worker would wait for ever
        out, err = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"the sweep still waits on {gone} after 300 s: {proc.communicate()[0][-1000:]}")
    assert proc.returncode == 0, err[-3000:]
    assert killed, "the point never showed Running"
    assert "1 done, 1 queued now" in out, out
    assert f"{gone}: its queue worker died while running it; queued again" in out, out
    after = {n: r["rev"] for n, r in _exp_metrics(root).items()}
    assert {n: after[n] for n in before if n != gone} == {n: before[n] for n in before if n != gone}
    assert gone in after
    log = run(["dvc", "queue", "logs", gone], root).stdout
    # its Stage II had run once already: restored from DVC's run cache, not retrained
    assert "Stage 'train_instance@cat_grass' is cached - skipping run" in log, log[-2000:]
    assert "Running stage 'train_instance@cat_grass'" not in log
    assert len(pd.read_csv(root / "reports/sweeps/t/results.csv")) == 3


@pytest.mark.e2e
def test_a_baseline_whose_committed_results_are_not_its_own_is_left_out(swept, tmp_path):
    """The baseline row reads the reports committed at HEAD: with a change the stages read (not reproduced),
    those numbers are not the baseline's, so the report leaves the row out and says why."""
    from dreamsolo.sweeps.collect import baseline_stale
    from dreamsolo.sweeps.report import write_report

    root = copy_study(swept[0], tmp_path / "study")
    sweep = load_sweep(root, "t")
    assert baseline_stale(root, sweep) is None
    edit_params(root, {"pairs.cat_grass.train_scene": {"steps": 7}})  # Stage I of the swept pair: not reproduced
    dest = write_report(root, sweep, log=False)
    assert "baseline" not in set(pd.read_csv(dest / "results.csv")["point"])
    assert "baseline" not in set(pd.read_csv(dest / "samples.csv")["point"])
    page = (dest / "index.md").read_text()
    assert "no baseline row: the results committed at HEAD are not its params' (the work tree differs from HEAD " \
           "(params.yaml))" in page, page[:1500]
    run(["git", "commit", "-qam", "Stage I steps, not reproduced"], root)  # a clean tree; DVC finds it stale
    assert baseline_stale(root, sweep).startswith("dvc status: "), baseline_stale(root, sweep)


def test_queue_workers_start_on_a_store_that_exists(tmp_path, monkeypatch):
    """A fresh study's first `-j 2` sweep: both workers' first stages migrated the new mlflow.db at once and
    one failed ("duplicate column name: step"). The store is created before `dvc queue start`."""
    import sqlite3

    from dreamsolo.sweeps import queue

    seen, real_run = {}, subprocess.run

    def start(cmd, **kw):  # stands in for `dvc queue start`: what would the workers find?
        if cmd[:3] != ["dvc", "queue", "start"]:
            return real_run(cmd, **kw)
        con = sqlite3.connect(tmp_path / "mlflow.db")
        seen["tables"] = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        con.close()
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setattr(queue.subprocess, "run", start)
    queue._start_workers(tmp_path, 2)
    assert {"experiments", "runs", "metrics", "alembic_version"} <= seen["tables"], seen


def test_the_shipped_sweeps_are_valid():
    from dreamsolo.sweeps.spec import load_sweeps

    sweeps = load_sweeps(REPO, declared_params(REPO))
    assert "lr_steps" in sweeps and len(sweeps["lr_steps"].points) >= 4


def test_a_sweep_whose_points_belong_to_another_commit_says_which(tmp_path):
    """A commit made while a sweep runs moves HEAD off its points' baseline: `--report-only` then names the
    commit the points were run on instead of saying that none ran."""
    from dreamsolo.sweeps.report import no_points

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=tmp_path, capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "base")
    base = git("rev-parse", "HEAD")
    for point in ("t-1a2b3c4d", "t-5e6f7a8b", "other-1a2b3c4d"):  # DVC's layout: refs/exps/<2>/<38>/<name>
        git("update-ref", f"refs/exps/{base[:2]}/{base[2:]}/{point}", base)
    assert no_points(tmp_path, "t") == "sweep t: no finished point yet (run `dreamsolo sweep t`)"  # they are HEAD's
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "docs")
    msg = no_points(tmp_path, "t")
    assert f"its points were run on another (2 on {base[:7]})" in msg and "--report-only" in msg
    assert "\n" not in msg
    assert no_points(tmp_path, "u") == "sweep u: no finished point yet (run `dreamsolo sweep u`)"
