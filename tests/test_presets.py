"""Presets carry the model's settings: denoising-step caps, sampler guidance, training settings (under
`by_category` and the pair) and evaluators; `model.preset` alone selects them, and a bad one names the key."""

from __future__ import annotations

import pytest

from studykit import error_of, study_with

from dreamsolo.config import ParamsError, load_study


@pytest.mark.parametrize("cap, priors, sample", [(10, 10, 10), (None, 20, 25), (30, 20, 25), (22, 20, 22)])
def test_the_preset_caps_denoising_steps(tmp_path, cap, priors, sample):
    """presets.<name>.sample_steps caps priors.steps and sample.steps (as train_steps caps training)."""
    study = load_study(study_with(tmp_path, {"presets.tiny.sample_steps": cap, "priors.steps": 20,
                                             "sample.steps": 25}))
    assert (study.priors.steps, study.sample.steps) == (priors, sample)


def test_sampler_guidance_follows_the_preset_unless_set(tmp_path):
    """priors/sample guidance left null take the preset's (toy's rescale, SDXL's 5.0); a value set wins."""
    study = load_study(study_with(tmp_path, {"presets.tiny.guidance_scale": 4.0, "presets.tiny.guidance_rescale": 0.7,
                                             "priors.guidance_scale": None, "priors.guidance_rescale": None,
                                             "sample.guidance_scale": 6.0, "sample.guidance_rescale": 0.0}))
    assert (study.priors.guidance_scale, study.priors.guidance_rescale) == (4.0, 0.7)
    assert (study.sample.guidance_scale, study.sample.guidance_rescale) == (6.0, 0.0)


def test_the_category_layer_sits_between_the_preset_and_the_pair(tmp_path):
    """train_<stage>.by_category overrides presets.<name>.train_<stage> (a sweep's per-category finding
    on the study's model), and the pair overrides both."""
    study = load_study(study_with(tmp_path, {
        "model.preset": "toy", "train_instance.by_category.animal": {"lr": 1e-6},
        "train_instance.by_category.object": {"lr": 7e-5},
        "presets.toy.train_instance": {"lr": 3e-4, "steps": 50, "train_text_encoder": True},
        "pairs.cat_brick.train_instance": {"lr": 1e-5}}, pairs=["cat_grass", "cat_brick", "cup_brick"]))
    grass, brick = study.train("cat_grass", "train_instance"), study.train("cat_brick", "train_instance")
    assert (grass.lr, grass.steps, grass.train_text_encoder) == (1e-6, 50, True)
    assert (brick.lr, brick.steps, brick.train_text_encoder) == (1e-5, 50, True)
    assert study.train("cup_brick", "train_instance").lr == 7e-5
    tiny = load_study(study_with(tmp_path, {"presets.toy.train_instance": {"lr": 3e-4}}))  # another preset's layer
    assert tiny.train("cat_grass", "train_instance").lr != 3e-4


@pytest.mark.parametrize("edits, start", [
    ({"model.preset": "toy", "presets.toy.train_scene": {"lrr": 1}}, "presets.toy.train_scene.lrr: unknown key"),
    ({"model.preset": "toy", "presets.toy.train_scene": {"replay_weight": 0.5}},
     "presets.toy.train_scene.replay_weight: scene replay only exists in train_instance"),
    ({"model.preset": "toy", "presets.toy.train_instance": {"lr": -1}}, "presets.toy.train_instance.lr: must be > 0"),
])
def test_a_bad_preset_training_setting_names_the_preset(tmp_path, edits, start):
    assert error_of(tmp_path, edits).startswith(start)


@pytest.mark.parametrize("preset, clip, dino", [
    ("toy", ("toy-clip", "data/evaluators/toy-clip.safetensors"), ("toy-dino", "data/evaluators/toy-dino.safetensors")),
    ("sd15", ("ViT-B-32", "openai"), ("vit_small_patch16_224.dino", True)),
    ("tiny", ("tiny-clip", "random"), ("vit_small_patch16_224.dino", "random")),
])
def test_evaluators_follow_the_preset(tmp_path, preset, clip, dino):
    """`model.preset` alone picks the model's evaluators (presets.<name>.evaluate); only tiny's are random."""
    ev = load_study(study_with(tmp_path, {"model.preset": preset})).evaluate
    assert (ev.clip_model, ev.clip_pretrained) == clip and (ev.dino_model, ev.dino_pretrained) == dino
    assert ev.pretrained == (preset != "tiny")


def test_evaluate_keys_override_the_presets_evaluators(tmp_path):
    ev = load_study(study_with(tmp_path, {"model.preset": "sd15", "evaluate.clip_pretrained": "random",
                                          "evaluate.dino_model": "toy-dino"})).evaluate
    assert (ev.clip_model, ev.clip_pretrained, ev.dino_model, ev.dino_pretrained) == \
        ("ViT-B-32", "random", "toy-dino", True)
    assert not ev.pretrained


@pytest.mark.parametrize("edits, start", [
    ({"evaluate.dino_pretrained": False}, "evaluate.dino_pretrained: false; use `random`"),
    ({"presets.tiny.evaluate.clip_pretrained": ""}, "presets.tiny.evaluate.clip_pretrained: ''"),
    ({"presets.tiny.evaluate.clip_modle": "x"}, "presets.tiny.evaluate.clip_modle: unknown key (did you mean 'clip_model'?)"),
    ({"model.preset": "toy", "presets.toy.evaluate.clip_model": "toy-clp"},
     "presets.toy.evaluate.clip_model: unknown open_clip model 'toy-clp' (did you mean 'toy-clip'?)"),
    ({"evaluate.clip_model": "ViT-B-33"}, "evaluate.clip_model: unknown open_clip model 'ViT-B-33' (did you mean"),
    ({"model.preset": "toy", "evaluate.dino_pretrained": "data/evaluators/nothing.safetensors"},
     "evaluate.dino_pretrained: data/evaluators/nothing.safetensors: file not found"),
    ({"model.preset": "toy", "evaluate.clip_pretrained": "weights.pt"},
     "evaluate.clip_pretrained: weights.pt: pickled weights are not loaded (unpickling can run code)"),
])
def test_bad_evaluator_settings_name_the_key(tmp_path, edits, start):
    (tmp_path / "weights.pt").write_bytes(b"\x80\x04K\x01.")  # a pickle: never loaded, refused by its kind
    with pytest.raises(ParamsError) as err:
        load_study(study_with(tmp_path, edits))
    assert str(err.value).startswith(start)
