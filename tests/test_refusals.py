"""Refusals that used to be DVC's words, or came from a stage after DVC had removed its outputs, are one
line of ours naming the key as written and what to do (issue 26, point 2).

Where each case stops (docs/bad-input.md, "params.yaml: refused before any output is removed"):
- `dreamsolo check` / `dreamsolo repro`: all six, before DVC reads dvc.yaml.
- plain `dvc repro`: an unknown class, an unknown preset, a pair id with a space and fp16 on a CPU stop
  at the `code` stage (tools/code_deps.py check_params); an empty pair id and an empty params.yaml stop
  DVC while it resolves dvc.yaml's `${...}`, before any stage, in DVC's words. Nothing is removed either way.

Mutations tried, each failing the tests named:
- check_runnable not called in `checked_study` (cli.py): test_each_refusal_is_one_line_of_ours[fp16-*].
- check_runnable not called in check_params (tools/code_deps.py): tests/test_code_deps.py's
  test_a_setting_this_machine_cannot_run_stops_the_fingerprints (run), and this file's e2e test, whose
  plain-dvc fp16 case then runs train_scene, which removes models/cat_grass/scene before refusing.
- the training key named by the merged stage (`train_scene (pair cat_grass, ...)`) instead of `written_at`:
  test_fp16_is_named_where_it_was_written.
- `_check_id` without the section prefix (the old check_id message): [empty-id], [space-id].
- the empty-file branch of _check_sections removed: [empty-file] (`model: missing params section`).
"""

from __future__ import annotations

import hashlib
import copy
from pathlib import Path

import pytest

from dreamsolo.params import dump_yaml, read_yaml
from studykit import FAST, REPO, copy_study, run, set_key

CASES = {  # name -> (edit of the params mapping, the line's start, a word of what to do)
    "class": (lambda d: set_key(d, "pairs.cat_grass.scene_class", "grasss"),
              "pairs.cat_grass.scene_class: 'grasss' is not a key of `classes`", "under classes"),
    "preset": (lambda d: set_key(d, "model.preset", "sd16"),
               "model.preset: unknown preset 'sd16' (did you mean 'sd15'?)", "known:"),
    "empty-id": (lambda d: d["pairs"].__setitem__("", d["pairs"].pop("cat_grass")),
                 "pairs: pair id '' is not a safe folder name", "rename it"),
    "space-id": (lambda d: d["pairs"].__setitem__("cat grass", d["pairs"].pop("cat_grass")),
                 "pairs: pair id 'cat grass' is not a safe folder name", "rename it"),
    "empty-file": (None, "params.yaml: the file is empty", "git checkout -- params.yaml"),
    "fp16": (lambda d: set_key(d, "train.mixed_precision", "fp16"),
             "train.mixed_precision: fp16 autocast is for CUDA GPUs", "use fp32 or bf16"),
}


def _write(root: Path, case: str, base: dict) -> None:
    """params.yaml of `root`: `base` with the case's edit."""
    import copy

    edit = CASES[case][0]
    if edit is None:
        (root / "params.yaml").write_text("")
        return
    params = copy.deepcopy(base)
    edit(params)
    (root / "params.yaml").write_text(dump_yaml(params))


@pytest.fixture(scope="module")
def small_params() -> dict:
    """The shipped params on the random `tiny` preset (no evaluator weight files needed), two pairs."""
    params = read_yaml(REPO / "params.yaml")
    params["pairs"] = {p: params["pairs"][p] for p in ("cat_grass", "cat_brick")}
    for dotted, value in FAST.items():
        set_key(params, dotted, value)
    return params


@pytest.mark.parametrize("case", list(CASES))
def test_each_refusal_is_one_line_of_ours(tmp_path, monkeypatch, capsys, small_params, case):
    from dreamsolo import cli, machine

    _write(tmp_path, case, small_params)
    monkeypatch.setenv("DREAMSOLO_ROOT", str(tmp_path))
    monkeypatch.setattr(machine, "cuda_available", lambda: False)  # the CPU box of the issue, on any machine
    with pytest.raises(SystemExit) as stop:
        cli.main(["check"])
    assert stop.value.code == 1
    err = capsys.readouterr().err
    start, fix = CASES[case][1:]
    assert err.count("\n") == 1 and err.startswith(f"error: {start}") and fix in err, err


def test_a_gpu_runs_fp16_and_a_good_file_is_ok(tmp_path, monkeypatch, capsys, small_params):
    from dreamsolo import cli, machine

    _write(tmp_path, "fp16", small_params)
    monkeypatch.setenv("DREAMSOLO_ROOT", str(tmp_path))
    monkeypatch.setattr(machine, "cuda_available", lambda: True)
    cli.main(["check"])
    assert capsys.readouterr().out.startswith("params.yaml: ok (2 pairs, 11 classes, preset tiny)")


@pytest.mark.parametrize("where", ["train", "train_scene.defaults", "train_instance.by_category.animal",
                                   "pairs.cat_brick.train_instance", "presets.tiny.train_scene"])
def test_fp16_is_named_where_it_was_written(tmp_path, small_params, where):
    from dreamsolo.config import study_from
    from dreamsolo.machine import check_runnable

    params = copy.deepcopy(small_params)
    set_key(params, f"{where}.mixed_precision", "fp16")
    study = study_from(tmp_path, params)
    with pytest.raises(ValueError, match=rf"^{where}\.mixed_precision: fp16 autocast is for CUDA GPUs") as err:
        check_runnable(study, cuda=False)
    assert "\n" not in str(err.value)
    check_runnable(study, cuda=True)  # a GPU runs it
    if where == "pairs.cat_brick.train_instance":  # a stage checks only what reaches it
        check_runnable(study, cuda=False, item="train_scene@cat_brick")


def test_sampling_fp16_and_8bit_adam_are_named_too(tmp_path, small_params):
    from dreamsolo.config import study_from
    from dreamsolo.machine import check_runnable

    for key, start in (("sample.precision", "sample.precision: fp16 sampling is for CUDA GPUs"),
                       ("train_instance.defaults.use_8bit_adam", "train_instance.defaults.use_8bit_adam: bitsandbytes")):
        params = copy.deepcopy(small_params)
        set_key(params, key, True if key.endswith("adam") else "fp16")
        with pytest.raises(ValueError, match=rf"^{start}"):
            check_runnable(study_from(tmp_path, params), cuda=False)


# --- end to end: the workspace of a reproduced study is untouched, by `dvc repro` and `dreamsolo repro` ---

def _files(root: Path) -> dict[str, str]:
    out = {}
    for top in ("models", "data/priors", "data/prepared", "data/samples", "reports", "fingerprints"):
        for p in sorted((root / top).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


DVC_PARSE = {"empty-id": "ERROR: unexpected error", "empty-file": "Could not find 'pairs'"}


@pytest.mark.e2e
def test_plain_dvc_and_dreamsolo_repro_refuse_without_touching_the_workspace(e2e_template, tmp_path, monkeypatch):
    import sys

    root = copy_study(e2e_template[0], tmp_path / "study")
    good_text, good = (root / "params.yaml").read_text(), read_yaml(root / "params.yaml")
    kept = _files(root)
    cli = str(Path(sys.executable).parent / "dreamsolo")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # fp16 is refused where torch sees no GPU
    for case in CASES:
        _write(root, case, good)
        plain = run(["dvc", "repro"], root, check=False)
        ours = run([cli, "repro"], root, check=False)
        start = CASES[case][1]
        assert plain.returncode != 0 and ours.returncode != 0, case
        if case in DVC_PARSE:  # DVC stops while it reads dvc.yaml: its words, nothing run
            assert DVC_PARSE[case] in plain.stderr and "Running stage" not in plain.stdout, (case, plain.stderr)
        else:  # the code stage's check: our line, and no other stage started
            lines = [x for x in plain.stderr.splitlines() if x.startswith("error: ")]
            assert len(lines) == 1 and start.removeprefix("params.yaml: ") in lines[0], (case, plain.stderr)
            assert plain.stdout.count("Running stage") == 1 and "Running stage 'code'" in plain.stdout, case
        assert ours.stderr.startswith(f"error: {start}") and ours.stderr.count("\n") == 1, (case, ours.stderr)
        assert "Running stage" not in ours.stdout, case
        assert "Traceback" not in plain.stderr + ours.stderr, case
        assert _files(root) == kept, f"{case}: the workspace changed"
    (root / "params.yaml").write_text(good_text)
    assert "Running stage" not in run(["dvc", "repro"], root).stdout  # fixed: nothing to redo
