"""Bad params.yaml: every mistake stops with one clear line that names the key (docs/bad-input.md, Params).

Fast: load_study on edited copies of the real params.yaml; one case runs the real stage script.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
import yaml

from studykit import DELETE, REPO, env, error_of, make_study, study_with

from dreamsolo.config import ParamsError, load_study

def test_the_real_params_load():
    study = load_study(REPO)
    assert study.preset_name in yaml.safe_load((REPO / "params.yaml").read_text())["presets"]


# (edits, the message's beginning, text it must also contain)
UNKNOWN_KEYS = {
    "section": ({"trian": {}}, "trian: unknown params section", "did you mean 'train'?"),
    "prepare": ({"prepare.crpo": "center"}, "prepare.crpo: unknown key", "did you mean 'crop'?"),
    "train": ({"train.sead": 1}, "train.sead: unknown key", "did you mean 'seed'?"),
    "sample": ({"sample.num_imgs": 2}, "sample.num_imgs: unknown key", "did you mean 'num_images'?"),
    "preset": ({"presets.tiny.resolutoin": 64}, "presets.tiny.resolutoin: unknown key",
               "did you mean 'resolution'?"),
    "stage defaults": ({"train_scene.defaults.lrr": 1e-6}, "train_scene.defaults.lrr: unknown key",
                       "did you mean 'lr'?"),
    "stage section": ({"train_instance.default": {}}, "train_instance.default: unknown key",
                      "did you mean 'defaults'?"),
    "by_category": ({"train_instance.by_category.animal": {"stpes": 10}},
                    "train_instance.by_category.animal.stpes: unknown key", "did you mean 'steps'?"),
    "pair override": ({"pairs.cat_grass.train_scene": {"prior_wieght": 0.5}},
                      "pairs.cat_grass.train_scene.prior_wieght: unknown key", "did you mean 'prior_weight'?"),
    "pair entry": ({"pairs.cat_grass.categroy": "animal"}, "pairs.cat_grass.categroy: unknown key",
                   "did you mean 'category'?"),
}


@pytest.mark.parametrize("case", UNKNOWN_KEYS.values(), ids=UNKNOWN_KEYS.keys())
def test_unknown_key_suggests_the_right_one(tmp_path, case):
    edits, start, extra = case
    msg = error_of(tmp_path, edits)
    assert msg.startswith(start) and extra in msg, msg


def test_typo_in_a_category_no_pair_uses_is_still_refused(tmp_path):
    """Only animal pairs in the study: the `object` overrides are still checked."""
    msg = error_of(tmp_path, {"train_scene.by_category.object": {"lrr": 1e-6}}, pairs=["cat_grass"])
    assert msg.startswith("train_scene.by_category.object.lrr: unknown key") and "'lr'" in msg, msg


BAD_VALUES = {
    "int as text": ({"train.seed": "zero"}, "train.seed: expected an integer, got 'zero'"),
    "bool as int": ({"train.batch_size": True}, "train.batch_size: expected an integer, got True"),
    "text as float": ({"sample.guidance_scale": "high"}, "sample.guidance_scale: expected a number"),
    "int as text in priors": ({"priors.steps": "20"}, "priors.steps: expected an integer, got '20'"),
    "list as bool": ({"evaluate.lpips_pretrained": [True]}, "evaluate.lpips_pretrained: expected bool"),
    "override not a mapping": ({"pairs.cat_grass.train_instance": [1]},
                               "pairs.cat_grass.train_instance: expected a mapping"),
    "by_category not a mapping": ({"train_scene.by_category.human": 3},
                                  "train_scene.by_category.human: expected a mapping"),
    "section not a mapping": ({"prepare": 5}, "prepare: expected a mapping"),
    "option": ({"prepare.crop": "left"}, "prepare.crop: 'left' is not one of: center, none"),
    "scheduler": ({"train.lr_scheduler": "cosin"}, "train.lr_scheduler: 'cosin' is not one of"),
    "lr zero": ({"train_scene.defaults.lr": 0}, "train_scene.defaults.lr: must be > 0, got 0"),
    "lr negative in a pair": ({"pairs.cat_grass.train_instance": {"lr": -1e-6}},
                              "pairs.cat_grass.train_instance.lr: must be > 0, got -1e-06"),
    "steps zero": ({"train_instance.defaults.steps": 0}, "train_instance.defaults.steps: must be > 0, got 0"),
    "steps negative by category": ({"train_instance.by_category.human": {"steps": -5}},
                                   "train_instance.by_category.human.steps: must be > 0, got -5"),
    "preset step cap": ({"presets.tiny.train_steps": 0}, "presets.tiny.train_steps: must be > 0"),
    "preset sampling cap": ({"presets.tiny.sample_steps": -1}, "presets.tiny.sample_steps: must be > 0"),
    "prior_weight": ({"train_scene.defaults.prior_weight": -0.1},
                     "train_scene.defaults.prior_weight: must be >= 0, got -0.1"),
    "replay_weight": ({"train_instance.defaults.replay_weight": -1},
                      "train_instance.defaults.replay_weight: must be >= 0"),
    "sample guidance": ({"sample.guidance_scale": -1.0}, "sample.guidance_scale: must be >= 0, got -1.0"),
    "priors guidance": ({"priors.guidance_scale": -7.5}, "priors.guidance_scale: must be >= 0, got -7.5"),
    "guidance rescale": ({"sample.guidance_rescale": 1.5}, "sample.guidance_rescale: must be in [0, 1]"),
    "preset guidance": ({"presets.tiny.guidance_scale": -1}, "presets.tiny.guidance_scale: must be >= 0"),
    "resolution": ({"presets.tiny.resolution": 60}, "presets.tiny.resolution: must be a multiple of 8, got 60"),
    "resolution zero": ({"presets.tiny.resolution": 0}, "presets.tiny.resolution: must be > 0"),
    "beta": ({"train.adam_beta2": 1.0}, "train.adam_beta2: must be in [0, 1), got 1.0"),
    "num_images": ({"sample.num_images": 0}, "sample.num_images: must be > 0, got 0"),
    "min_size": ({"prepare.min_size": -64}, "prepare.min_size: must be > 0"),
    "token": ({"prompts.scene_token": "two words"}, "prompts.scene_token: 'two words' must be a single"),
    "same tokens": ({"prompts.instance_token": "olis"}, "prompts: scene_token and instance_token must differ"),
    "recontext": ({"prompts.recontext": ["a photo of a dog"]}, "prompts.recontext[0]: "),
    "missing section": ({"priors": DELETE}, "priors: missing params section"),
    "missing key": ({"pairs.cat_grass.scene_class": DELETE}, "pairs.cat_grass.scene_class: missing required key"),
}


@pytest.mark.parametrize("case", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_bad_value_names_the_key(tmp_path, case):
    edits, start = case
    msg = error_of(tmp_path, edits)
    assert msg.startswith(start), msg


def test_a_bad_value_in_a_shared_layer_names_that_layer_and_the_pair(tmp_path):
    msg = error_of(tmp_path, {"train.warmup_steps": -1})
    assert msg == "train.warmup_steps: must be >= 0, got -1 (train_scene of pair cat_grass, category animal)", msg


def test_unknown_preset(tmp_path):
    msg = error_of(tmp_path, {"model.preset": "sd16"})
    assert msg.startswith("model.preset: unknown preset 'sd16'") and "did you mean 'sd15'?" in msg
    assert "tiny, sd15, sd21-base" in msg


def test_unknown_category(tmp_path):
    msg = error_of(tmp_path, {"pairs.cat_grass.category": "animl"})
    assert msg.startswith("pairs.cat_grass.category: 'animl' is not one of: object, animal, human"), msg
    assert "did you mean 'animal'?" in msg
    msg = error_of(tmp_path, {"train_instance.by_category.animl": {"lr": 1e-6}})
    assert msg.startswith("train_instance.by_category.animl: unknown category (did you mean 'animal'?)"), msg


def test_unknown_class_reference(tmp_path):
    msg = error_of(tmp_path, {"pairs.cat_grass.scene_class": "grasss"})
    assert msg.startswith("pairs.cat_grass.scene_class: 'grasss' is not a key of `classes`")
    assert "did you mean 'grass'?" in msg
    msg = error_of(tmp_path, {"pairs.cat_grass.instance_class": "kitten"})
    assert msg.startswith("pairs.cat_grass.instance_class: 'kitten' is not a key of `classes`"), msg
    assert msg.endswith("or add `kitten: <noun>` under classes"), msg  # what to do (issue 26)


def test_class_noun_must_be_text(tmp_path):
    msg = error_of(tmp_path, {"classes.cat": ""})
    assert msg.startswith("classes.cat: expected a class noun"), msg


@pytest.mark.parametrize("bad", ["../x", "a b", "", ".hidden", "x/y", "-rf", "a" * 65])
def test_pair_ids_must_be_safe_folder_names(tmp_path, bad):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pairs"][bad] = params["pairs"].pop("cat_grass")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ValueError) as err:
        load_study(tmp_path)
    msg = str(err.value)
    assert msg.startswith(f"pairs: pair id {bad!r} is not a safe folder name") and "\n" not in msg, msg
    assert msg.endswith("; rename it (and its folder under data/pairs/)"), msg  # issue 26: the key and the fix


@pytest.mark.parametrize("bad", ["../cat", "c a t"])
def test_class_ids_must_be_safe_folder_names(tmp_path, bad):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["classes"][bad] = "cat"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    with pytest.raises(ValueError, match=r"^classes: class id .* is not a safe folder name.*; rename it$"):
        load_study(tmp_path)


def test_replay_weight_belongs_to_train_instance(tmp_path):
    msg = error_of(tmp_path, {"train_scene.defaults.replay_weight": 0.5})
    assert msg.startswith("train_scene.defaults.replay_weight: scene replay only exists in train_instance"), msg
    msg = error_of(tmp_path, {"pairs.cat_grass.train_scene": {"replay_weight": 0.5}})
    assert msg.startswith("pairs.cat_grass.train_scene.replay_weight: scene replay only exists"), msg
    msg = error_of(tmp_path, {"train.replay_weight": 0.5})  # shared by both stages: the scene stage refuses
    assert msg.startswith("train.replay_weight: scene replay only exists in train_instance"), msg


def test_unknown_pair_on_the_command_line(tmp_path):
    study = load_study(study_with(tmp_path, {}))
    with pytest.raises(ParamsError, match=r"^pairs\.cat_gras: no such pair \(did you mean 'cat_grass'\?\)"):
        study.train("cat_gras", "train_scene")


def test_yaml_syntax_error_names_the_file(tmp_path):
    (tmp_path / "params.yaml").write_text("model:\n  preset: [tiny\n")
    with pytest.raises(ParamsError, match=r"params.yaml:3: not valid YAML: expected .*flow sequence from line 2"):
        load_study(tmp_path)


def test_pair_folders_match_params(tmp_path, monkeypatch):
    from dreamsolo.images import ImageError, check_pair_folders

    monkeypatch.chdir(tmp_path)  # messages show paths relative to the cwd (the study root under DVC)
    pairs = tmp_path / "data" / "pairs"
    (pairs / "cat_grass").mkdir(parents=True)
    (pairs / "stray_pair").mkdir()
    (pairs / ".hidden").mkdir()
    (pairs / "SOURCES.md").write_text("x")
    with pytest.raises(ImageError) as err:
        check_pair_folders(pairs, ["cat_grass", "cup_brick"])
    lines = str(err.value).splitlines()
    assert lines == ["pairs.cup_brick: no folder data/pairs/cup_brick/",
                     "data/pairs/stray_pair/: no entry under pairs in params.yaml"]
    check_pair_folders(pairs, ["cat_grass", "stray_pair"])  # matching: no error


def test_prepare_stage_refuses_a_pair_without_folder(tmp_path, monkeypatch):
    from dreamsolo.images import ImageError
    from dreamsolo.stages.prepare import run as prepare_stage

    root = make_study(tmp_path / "study", ["cat_grass", "cat_brick"])
    monkeypatch.chdir(root)
    shutil.rmtree(root / "data/pairs/cat_brick")
    with pytest.raises(ImageError, match=r"pairs.cat_brick: no folder data/pairs/cat_brick/"):
        prepare_stage(load_study(root), "cat_grass")
    assert not (root / "data/prepared").exists()


@pytest.mark.e2e
def test_bad_param_through_the_stage_script(tmp_path):
    """The real entry point: exit 1, one `error:` line on stderr, no traceback, nothing written."""
    root = make_study(tmp_path / "study", ["cat_grass"], {"train_scene.defaults.lr": 0})
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    proc = subprocess.run([sys.executable, "stages/train_scene.py", "--pair", "cat_grass"], cwd=root,
                          env={**env(root), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: train_scene: train_scene.defaults.lr: must be > 0, got 0"), lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before, "the stage wrote something"
    assert not (tmp_path / "mlflow.db").exists()


@pytest.mark.parametrize("edits, start", [
    ({"classes": ["cat"]}, "classes: expected a mapping"),
    ({"pairs": ["cat_grass"]}, "pairs: expected a mapping"),
    ({"model.preset": ["tiny"]}, "model.preset: "),
    ({"presets.sd15.resolution": 500}, "presets.sd15.resolution: must be a multiple of 8"),
])
def test_load_study_checks_shapes(tmp_path, edits, start):
    msg = error_of(tmp_path, edits, exc=Exception)
    assert msg.startswith(start), msg
