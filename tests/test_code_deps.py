"""Each DVC stage depends on the fingerprint of exactly the project files its code imports
(tools/code_deps.py), so editing a file reruns exactly the stages whose code can run it; drift between
dvc.yaml and the imports fails here."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import yaml

from studykit import REPO


@pytest.fixture(scope="module")
def code_deps():
    spec = importlib.util.spec_from_file_location("code_deps", REPO / "tools/code_deps.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["code_deps"] = module
    spec.loader.exec_module(module)
    return module


def test_dvc_yaml_code_deps_equal_the_import_closures(code_deps):
    drift = code_deps.drift()
    lines = [f"{stage}: missing {m}, extra {e}" for stage, (m, e) in drift.items()]
    assert not drift, "dvc.yaml code deps drifted (fix: python tools/code_deps.py --write):\n" + "\n".join(lines)


def test_closures_follow_lazy_imports_and_stay_out_of_other_stages(code_deps):
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    closure = {name: code_deps.closure(script) for name, script in code_deps.stage_scripts(dvc).items()}
    for stage in ("train_scene", "train_instance"):
        # imported inside functions (training.inputs -> sampling.encode_latents; loop -> models.loading)
        assert {"src/dreamsolo/sampling.py", "src/dreamsolo/models/loading.py"} <= closure[stage]
        assert f"stages/{stage}.py" in closure[stage]
    assert "src/dreamsolo/images.py" in closure["prepare"] and "src/dreamsolo/stages/prepare.py" in closure["prepare"]
    assert "src/dreamsolo/tiny-clip.json" in closure["evaluate"]  # package data named by metrics/clip.py
    assert not any(f.startswith("src/dreamsolo/report/") for s, c in closure.items() if s != "report" for f in c)
    assert not any(f.startswith("src/dreamsolo/training/") for f in closure["report"] | closure["evaluate"])
    assert "src/dreamsolo/models/tiny.py" in closure["base"] and "src/dreamsolo/models/tiny.py" not in closure["sample"]
    assert all("src/dreamsolo/cli.py" not in c and "src/dreamsolo/sample_command.py" not in c for c in closure.values())


def test_drift_is_reported_both_ways(code_deps, tmp_path):
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("      - src/dreamsolo/sampling.py\n", "", 1)  # the code stage stops watching it
    broken = broken.replace("      - fingerprints/sample.txt:\n          cache: false\n", "", 1)  # nor writes this
    broken = broken.replace("        - fingerprints/train_scene.txt\n", "", 1)  # a stage loses its fingerprint
    broken = broken.replace("      - fingerprints/report.txt\n",
                            "      - fingerprints/report.txt\n      - src/dreamsolo/cli.py\n", 1)
    assert broken.count("\n") == text.count("\n") - 3
    (tmp_path / "dvc.yaml").write_text(broken)
    drift = code_deps.drift(tmp_path / "dvc.yaml")
    assert drift == {"code": (["outs: fingerprints/sample.txt", "src/dreamsolo/sampling.py"], []),
                     "train_scene": (["fingerprints/train_scene.txt"], []),
                     "report": ([], ["src/dreamsolo/cli.py"])}
    assert code_deps.rewrite(broken) == text  # --write restores exactly the committed file


@pytest.fixture
def repo_copy(code_deps, tmp_path, monkeypatch):
    """The code and dvc.yaml in a throwaway git repo, with code_deps pointed at it."""
    import shutil
    import subprocess

    skip = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "stages", "tools"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=skip)
    shutil.copy2(REPO / "dvc.yaml", tmp_path / "dvc.yaml")
    shutil.copy2(REPO / "params.yaml", tmp_path / "params.yaml")  # --fingerprint checks it first
    shutil.copytree(REPO / "data/pairs", tmp_path / "data/pairs")
    (tmp_path / "data/evaluators").symlink_to(REPO / "data/evaluators")  # the toy preset's weights must exist
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)  # package data = files git tracks
    monkeypatch.setattr(code_deps, "REPO", tmp_path)
    monkeypatch.setattr(code_deps, "SRC", tmp_path / "src")
    code_deps._direct.cache_clear()
    code_deps._package_data.cache_clear()
    yield tmp_path
    code_deps._direct.cache_clear()
    code_deps._package_data.cache_clear()


def fingerprints(root):
    return {p.stem: p.read_text() for p in (root / "fingerprints").glob("*.txt")}


def test_an_edit_changes_exactly_the_fingerprints_of_the_stages_that_import_it(code_deps, repo_copy):
    assert code_deps.main(["--fingerprint"]) == 0
    before = fingerprints(repo_copy)
    assert set(before) == {p.stem for p in (repo_copy / "stages").glob("*.py")}
    for rel, expected in [("src/dreamsolo/training/loss.py", {"train_scene", "train_instance", "train_arm"}),
                          ("src/dreamsolo/report/html.py", {"report"}),
                          ("src/dreamsolo/cli.py", set())]:
        path = repo_copy / rel
        path.write_text(path.read_text() + "\n# an edit\n")
        assert code_deps.main(["--fingerprint"]) == 0
        after = fingerprints(repo_copy)
        assert {s for s in before if after[s] != before[s]} == expected, rel
        before = after


def test_fingerprints_are_not_written_while_dvc_yaml_drifts(code_deps, repo_copy, capsys):
    path = repo_copy / "dvc.yaml"
    path.write_text(path.read_text().replace("      - src/dreamsolo/sampling.py\n", "", 1))
    assert code_deps.main(["--fingerprint"]) == 1
    assert not (repo_copy / "fingerprints").exists()
    assert "should list src/dreamsolo/sampling.py" in capsys.readouterr().out


def test_a_bad_params_file_stops_the_fingerprints(code_deps, repo_copy, capsys):
    code_deps.main(["--fingerprint"])
    before = fingerprints(repo_copy)
    (repo_copy / "params.yaml").write_text((repo_copy / "params.yaml").read_text().replace("\nsample:\n", "\nsample:\n  seedz: 1\n", 1))
    assert code_deps.main(["--fingerprint"]) == 1
    assert "error: params.yaml: sample.seedz: unknown key" in capsys.readouterr().err
    assert fingerprints(repo_copy) == before


def test_a_setting_this_machine_cannot_run_stops_the_fingerprints(code_deps, repo_copy, capsys, monkeypatch):
    """fp16 without a GPU is refused by the code stage, named as written, before a training stage's outputs
    are removed (issue 26). Mutation tried: check_params without check_runnable fails this test."""
    from dreamsolo import machine

    monkeypatch.setattr(machine, "cuda_available", lambda: False)
    code_deps.main(["--fingerprint"])
    before = fingerprints(repo_copy)
    text = (repo_copy / "params.yaml").read_text()
    assert "  mixed_precision: fp32 " in text
    (repo_copy / "params.yaml").write_text(text.replace("  mixed_precision: fp32 ", "  mixed_precision: fp16 ", 1))
    assert code_deps.main(["--fingerprint"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: params.yaml: train.mixed_precision: fp16 autocast is for CUDA GPUs") and \
        err.count("\n") == 1, err
    assert fingerprints(repo_copy) == before


def test_type_checking_imports_do_not_count(code_deps, tmp_path):
    import ast

    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import dreamsolo.report\n"
                     "def f():\n    import dreamsolo.sampling\n")
    found = code_deps._imported(tree, "dreamsolo.x")
    assert "dreamsolo.sampling" in found and "dreamsolo.report" not in found


@pytest.mark.parametrize("script", sorted(p.name for p in (REPO / "stages").glob("*.py")))
def test_stage_scripts_import_no_torch_before_the_warm_handoff(script):
    """What a stage script imports before `stage_main` hands it to the warm server is paid in every client
    process (~2 s and ~600 MB for torch): it must stay light; the stage's heavy imports happen in the fork."""
    import subprocess

    top = (REPO / "stages" / script).read_text().split("if __name__")[0]
    code = f"import sys\nexec({top!r})\nprint(sorted({{'torch', 'diffusers', 'pandas'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
