"""Each DVC stage depends on exactly the project files its code imports (tools/code_deps.py), so editing a
file reruns exactly the stages whose code can run it; drift between dvc.yaml and the imports fails here."""

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
    assert all("src/dreamsolo/cli.py" not in c and "src/dreamsolo/adhoc.py" not in c for c in closure.values())


def test_drift_is_reported_both_ways(code_deps, tmp_path):
    text = (REPO / "dvc.yaml").read_text()
    broken = text.replace("        - src/dreamsolo/sampling.py\n", "", 1)  # the first stage that lists it loses it
    broken = broken.replace("      - src/dreamsolo/report/tables.py\n",
                            "      - src/dreamsolo/report/tables.py\n      - src/dreamsolo/cli.py\n", 1)
    assert broken != text
    (tmp_path / "dvc.yaml").write_text(broken)
    drift = code_deps.drift(tmp_path / "dvc.yaml")
    assert any("src/dreamsolo/sampling.py" in missing for missing, _ in drift.values())
    assert drift["report"][1] == ["src/dreamsolo/cli.py"]
    fixed = code_deps.rewrite(broken, {n: code_deps.closure(s) for n, s in
                                       code_deps.stage_scripts(yaml.safe_load(broken)).items()})
    assert fixed == text  # --write restores exactly the committed file


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
