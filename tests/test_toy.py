"""The toy world's pool, sources and training loops: deterministic, resumable, loadable; nothing of the study in it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from pathlib import Path

from dreamsolo.toyworld import pool as P
from dreamsolo.toyworld import scenes, sources

needs_stamps = pytest.mark.skipif(not sources.STAMPS.is_dir(), reason="apt package tuxpaint-stamps-default")
PAIRS = Path(__file__).resolve().parents[1] / "data/pairs"


def test_scenes_and_drawn_objects_are_seeded():
    for kind in scenes.PLACES:
        a = np.asarray(scenes.texture(kind, np.random.default_rng(3)))
        b = np.asarray(scenes.texture(kind, np.random.default_rng(3)))
        assert a.shape == (64, 64, 3) and (a == b).all()
    for draw in (scenes.rocket, scenes.gift_box):
        assert (np.asarray(draw(np.random.default_rng(1))) == np.asarray(draw(np.random.default_rng(1)))).all()


def test_names_map_to_study_classes():
    cls = sources.study_class
    assert cls("animals/mammals/housecats/gatto_cat_architetto_fra_01.png") == "cat"
    assert cls("animals/mammals/horses/cavallo_architetto_franc_07.png") == "horse"
    assert cls("food/beverages/kubek_herbaty_-_mug_of__01.png") == "cup of coffee"
    assert cls("recreation/holiday/gift04.png") == "gift box"
    assert cls("computer/icons/flat-theme/applications/kpresenter.png") is None  # "presenter" is not a present
    assert cls("woman's hat") is None and cls("mens room") is None  # person words next to a thing
    assert cls(":beer_mug:") is None and cls("transportation/roadsigns/horse.png") is None
    assert sources.emoji_noun(":woman_astronaut_medium-light_skin_tone:") == "person"
    assert sources.emoji_noun(":hot_beverage:") == "cup of coffee"
    assert sources.emoji_noun(":red_apple:") == "red apple"
    assert sources.clipart_noun("animals/mammals/big_cats/lion_01.png") == "lion"


@needs_stamps
def test_stamp_cats_are_house_cats():
    root = sources.STAMPS
    assert sources.stamp_noun(root / "animals/mammals/cats/tiger.png") == "tiger"  # the folder holds big cats
    assert sources.stamp_noun(root / "animals/mammals/cats/kitten.svg") == "cat"
    assert sources.stamp_noun(root / "animals/mammals/equines/horse.png") == "horse"


def test_heldout_split_is_stable_and_a_tenth():
    keys = [f"clipart:dir/file_{i}.png" for i in range(5000)]
    share = np.mean([sources.heldout(k) for k in keys])
    assert 0.08 < share < 0.12
    assert [sources.heldout(k) for k in keys[:50]] == [sources.heldout(k) for k in keys[:50]]


def test_study_objects_hold_out_at_least_five_cut_outs():
    """A plain tenth left 1-2 held-out cut-outs of most study objects. Mutation: `least` ignored (a tenth
    only) gives 3 of 25 and fails; no quarter cap gives 5 of 8 and fails."""
    keys = [f"clipart:animals/cat_{i}.png" for i in range(1613)]
    held = {n: sources.study_heldout(keys[:n]) for n in (8, 21, 25, 31, 1613)}
    assert {n: len(h) for n, h in held.items()} == {8: 2, 21: 5, 25: 5, 31: 5, 1613: 162}
    assert held[25] <= set(keys[:25]) and sources.study_heldout(keys[:25]) == held[25]  # its own keys, stable
    assert sources.study_heldout(list(reversed(keys[:25]))) == held[25]  # by hash, not by order


def test_study_photos_never_enter_the_pool():
    """A recoloured, mirrored copy of a study photo is dropped (the gift stamp is the gift photo in red);
    a different object is kept. Mutation: a limit of 1.0 keeps the copy and fails."""
    gift = Image.open(PAIRS / "gift_grass/instance.png").convert("RGBA")
    arr = np.asarray(gift).copy()
    arr[..., [0, 2]] = arr[..., [2, 0]]  # blue -> red, as Tux Paint's present stamp
    copy = sources.Cutout(Image.fromarray(arr).transpose(Image.FLIP_LEFT_RIGHT), "gift box", "stamps", "copy")
    other = sources.Cutout(scenes.rocket(np.random.default_rng(0)), "rocket", "stamps", "other")
    keep, dropped = sources.drop_study_photos([copy, other], sources.study_photos(PAIRS))
    assert dropped == ["copy"] and keep == [other]


def _cutouts() -> list[sources.Cutout]:
    rng = np.random.default_rng(0)
    out = [sources.Cutout(scenes.gift_box(rng), noun, "clipart", f"{noun}/{i}") for noun in sources.OBJECTS
           for i in range(3)]
    return out + [sources.Cutout(scenes.rocket(rng), f"thing {i}", "emoji", f"thing{i}") for i in range(5)]


def test_composer_is_deterministic_and_captions_follow_the_study_prompts():
    photos = [(Image.new("RGB", (80, 80), (90, 120, 200)), "wall")]
    a, b = P.Composer(_cutouts(), photos, 7), P.Composer(_cutouts(), photos, 7)
    seen = set()
    for _ in range(200):
        ea, eb = a.example(), b.example()
        assert (np.asarray(ea[0]) == np.asarray(eb[0])).all() and ea[1:] == eb[1:]
        seen.add(ea[1])
    assert "a photo of a cat" in seen and any(c.endswith(" at night") for c in seen)
    assert any(c.startswith("a watercolor painting of ") for c in seen)
    assert any(c.endswith(" on the beach") or c.endswith(" in the snow") for c in seen)


def test_pool_round_trip(tmp_path):
    pool = P.Pool(np.zeros((3, 64, 64, 3), np.uint8), ["a", "b", "c"], ["x", "y", "z"], np.array([1, 0, 0], bool),
                  ["k", "", "k"], {"images": 3})
    pool.save(tmp_path / "p.npz")
    back = P.Pool.load(tmp_path / "p.npz")
    assert back.captions == pool.captions and back.keys == pool.keys and back.heldout.tolist() == [True, False, False]


def test_a_pool_built_with_another_held_out_split_is_refused_in_one_line(tmp_path):
    """The evaluators would otherwise train on pictures their validation holds out. Mutation: load_pool
    without the check returns the stale pool and fails."""
    images = np.zeros((1, 64, 64, 3), np.uint8)
    P.Pool(images, ["a"], ["x"], np.array([0], bool), [""], {"images": 1}).save(tmp_path / "old.npz")
    with pytest.raises(SystemExit, match=r"old\.npz: built with an older held-out split .* delete it to rebuild"):
        P.load_pool(tmp_path / "old.npz")
    P.Pool(images, ["a"], ["x"], np.array([0], bool), [""], {"heldout_split": P.SPLIT}).save(tmp_path / "new.npz")
    assert P.load_pool(tmp_path / "new.npz").captions == ["a"]


def test_identity_captions_name_each_cut_out_by_its_own_rare_word():
    vocab = {"cat</w>": 40001, "zorb</w>": 40002, "sks</w>": 48136, "qux</w>": 40003, "ab</w>": 40004,
             "kwee</w>": 100, "grass</w>": 40005, "plo": 40006}
    caps = ["a photo of a cat on a grass field", "a watercolor painting of a cat", "a photo of a cat",
            "a photo of a grass field", "a photo of an owl"] * 20
    classes = ["cat", "cat", "cat", "grass field", "owl"] * 20
    keys = ["clipart:a", "clipart:b", "", "", "emoji:c"] * 20
    tokens = P.rare_tokens(vocab, caps, ["sks"])
    assert tokens == ["qux", "zorb"]  # not a caption's word, not the study's, 3-5 letters, rare, a whole word
    pool = P.Pool(np.zeros((100, 1, 1, 3), np.uint8), caps, classes, np.zeros(100, bool), keys, {})
    out, n = P.identity_captions(pool, 0.5, tokens, seed=3)
    assert (out, n) == P.identity_captions(pool, 0.5, tokens, seed=3) and 10 < n < 50
    renamed = [(o, k) for o, c, k in zip(out, caps, keys) if o != c]
    assert len(renamed) == n and all(k for _, k in renamed)  # only pictures of a cut-out, never a scene
    word = {k: o.split(" of ")[1].split()[0] for o, k in renamed}
    assert all(o.replace(f" of {word[k]} ", " of a ", 1).replace(" of a owl", " of an owl") in caps for o, k in renamed)
    assert set(word.values()) <= set(tokens)
    assert all(o.split(" of ")[1].split()[0] == word[k] for o, k in renamed)  # one word per cut-out
    assert P.identity_captions(pool, 0.0, tokens, seed=3) == (caps, 0)


def test_augment_keeps_the_crop_inside_and_is_seeded():
    from dreamsolo.toyworld.clip import augment

    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    a = augment(x, torch.Generator().manual_seed(0), 0.5)
    b = augment(x, torch.Generator().manual_seed(0), 0.5)
    assert a.shape == (8, 3, 64, 64) and torch.equal(a, b)
    full = augment(x, torch.Generator().manual_seed(0), 1.0)  # whole picture, maybe mirrored: same pixels
    from dreamsolo.toyworld.clip import MEAN, STD
    back = (full * STD + MEAN) * 255
    assert any(torch.allclose(back[i], x[i].float(), atol=1e-2) or torch.allclose(back[i], x[i].float().flip(-1), atol=1e-2)
               for i in range(8))


def test_soft_clip_loss_treats_equal_captions_as_matches():
    """Two pictures with one caption: with soft targets, embedding them alike is optimal; one-hot targets
    (plain CLIP) would pay to push them apart. Mutation: one-hot targets fail the first assertion."""
    from dreamsolo.toyworld.clip import soft_clip_loss

    alike = torch.tensor([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]])
    apart = torch.nn.functional.normalize(torch.tensor([[1.0, 0.3, 0], [1.0, -0.3, 0], [0, 0, 1.0]]), dim=-1)
    scale = torch.tensor(20.0)
    shared = torch.tensor([0, 0, 1])
    assert soft_clip_loss(alike, alike, shared, scale) < soft_clip_loss(apart, apart, shared, scale)
    distinct = torch.tensor([0, 1, 2])
    assert soft_clip_loss(apart, apart, distinct, scale) < soft_clip_loss(alike, alike, distinct, scale)


def test_dino_loss_is_zero_only_when_views_agree():
    from dreamsolo.toyworld.dino import dino_loss

    t = torch.randn(4, 16)
    same = dino_loss(torch.cat([t, t]) * 0.4, torch.cat([t, t]), torch.zeros(1, 16), 0.1, 0.04)
    swapped = dino_loss(torch.cat([t, t.roll(1, 0)]) * 0.4, torch.cat([t, t]), torch.zeros(1, 16), 0.1, 0.04)
    assert same < swapped


def test_toy_trainers_resume_and_load(tmp_path):
    """Two steps of each evaluator trainer, then a rerun that resumes and trains nothing; the files load
    through the study's own evaluator loaders, strictly."""
    from dreamsolo.metrics.clip import load_clip
    from dreamsolo.metrics.dino import TOY_DINO, load_dino
    from dreamsolo.toyworld.clip import ClipPlan, train_clip
    from dreamsolo.toyworld.dino import DinoPlan, train_dino

    torch.set_num_threads(1)
    n = 12
    rng = np.random.default_rng(0)
    pool = P.Pool(rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8), [f"a photo of a {i % 3}" for i in range(n)],
                  [str(i % 3) for i in range(n)], np.zeros(n, bool), [f"k{i % 4}" for i in range(n)], {})
    clip = train_clip(pool, tmp_path / "clip.safetensors", tmp_path / "ck", ClipPlan(steps=2, batch=4))
    again = train_clip(pool, tmp_path / "clip2.safetensors", tmp_path / "ck", ClipPlan(steps=2, batch=4))
    assert clip["steps"] == again["steps"] == 2
    assert (tmp_path / "clip.safetensors").read_bytes() == (tmp_path / "clip2.safetensors").read_bytes()
    assert load_clip("toy-clip", str(tmp_path / "clip.safetensors")).pretrained
    train_dino(pool, tmp_path / "dino.safetensors", tmp_path / "ck", DinoPlan(steps=2, batch=4))
    assert load_dino(TOY_DINO, str(tmp_path / "dino.safetensors")).pretrained


def test_pretrain_resumes_and_loads(tmp_path):
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.toyworld.diffusion import Plan, pretrain_toy

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pool = P.Pool(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8), ["a photo of a cat", "a photo of a horse"] * 4,
                  ["cat", "horse"] * 4, np.zeros(8, bool), [""] * 8, {"images": 8})
    plan = Plan(images=8, vae_steps=2, unet_steps=2, vae_batch=2, unet_batch=2, decoder_steps=2, text_steps=2,
                text_batch=2)
    info = pretrain_toy(tmp_path / "toy", tmp_path / "ckpt", plan, pool)
    again = pretrain_toy(tmp_path / "toy2", tmp_path / "ckpt", plan, pool)  # everything done: resumes, trains nothing
    assert info["unet"]["steps"] == again["unet"]["steps"] == info["text"]["steps"] == 2
    pipe = load_pipeline(tmp_path / "toy2")
    assert pipe.unet.config.in_channels == pipe.vae.config.latent_channels == 16
    assert pipe.vae.config.scaling_factor == pytest.approx(info["scaling_factor"])
    assert pipe.tokenizer.tokenize("a photo of sks cat") == ["a</w>", "photo</w>", "of</w>", "sks</w>", "cat</w>"]


def test_pretrain_continues_a_toy_pipeline_with_its_vae_a_noun_head_or_its_text_encoder(tmp_path):
    from safetensors.torch import load_file

    from dreamsolo.toyworld.diffusion import Plan, head_targets, pretrain_toy

    torch.set_num_threads(1)
    rng = np.random.default_rng(1)
    caps = ["a photo of a cat", "a photo of a cat on a grass field", "a photo of a horse", "a photo of a grass field"]
    pool = P.Pool(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8), caps * 2,
                  ["cat", "cat", "horse", "grass field"] * 2, np.zeros(8, bool), ["k1", "k2", "k3", ""] * 2,
                  {"images": 8})
    small = dict(images=8, vae_batch=2, unet_batch=2, text_steps=2, text_batch=2)
    pretrain_toy(tmp_path / "first", tmp_path / "ck1", Plan(vae_steps=2, unet_steps=2, decoder_steps=2, **small), pool)
    plan = Plan(unet_steps=2, head="noun", init=str(tmp_path / "first"), **small)
    info = pretrain_toy(tmp_path / "next", tmp_path / "ck2", plan, pool)
    uniq = sorted(set(caps)) + [""]
    assert head_targets(uniq, caps, ["cat", "cat", "horse", "grass field"], "noun").tolist() == [0, 0, 1, 2]
    vae = [load_file(tmp_path / d / "vae" / "diffusion_pytorch_model.safetensors") for d in ("first", "next")]
    assert all(torch.equal(vae[0][k], vae[1][k]) for k in vae[0])  # the VAE is the init's, bit for bit
    unet = [load_file(tmp_path / d / "unet" / "diffusion_pytorch_model.safetensors") for d in ("first", "next")]
    assert any(not torch.equal(unet[0][k], unet[1][k]) for k in unet[0])  # the UNet trained on
    assert info["unet"]["steps"] == 2 and info["vae"].startswith("kept from") and info["plan"]["head"] == "noun"
    # --freeze-text: the init's text encoder too, bit for bit (the identifiers' neighbourhood), the UNet trained on
    plan = Plan(unet_steps=2, init=str(tmp_path / "first"), freeze_text=True, identity_share=1.0, **small)
    frozen = pretrain_toy(tmp_path / "frozen", tmp_path / "ck3", plan, pool)
    text = [load_file(tmp_path / d / "text_encoder" / "model.safetensors") for d in ("first", "next", "frozen")]
    assert all(torch.equal(text[0][k], text[2][k]) for k in text[0])
    assert any(not torch.equal(text[0][k], text[1][k]) for k in text[0])  # what the flag prevents
    unet3 = load_file(tmp_path / "frozen" / "unet" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(unet[0][k], unet3[k]) for k in unet[0])
    assert frozen["text"].startswith("kept from") and frozen["unet"]["steps"] == 2
    assert frozen["data"]["identity_captions"] == 6 and frozen["data"]["identity_words"] > 1000  # the keyed six


def test_the_unet_phase_draws_only_the_classes_asked_for(tmp_path):
    """--only-study: the UNet sees only some classes' pictures. Naming every class draws exactly as without
    the option; naming one class trains another UNet; a class the pool lacks is refused in one line."""
    from safetensors.torch import load_file

    from dreamsolo.toyworld.diffusion import Plan, pretrain_toy, unet_rows

    torch.set_num_threads(1)
    rng = np.random.default_rng(2)
    classes = ["cat", "horse", "grass field", "cat"] * 2
    pool = P.Pool(rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8), [f"a photo of a {c}" for c in classes],
                  classes, np.zeros(8, bool), [""] * 8, {"images": 8})
    small = dict(images=8, vae_batch=2, unet_batch=2, text_steps=2, text_batch=2)
    pretrain_toy(tmp_path / "first", tmp_path / "ck0", Plan(vae_steps=2, unet_steps=2, decoder_steps=2, **small), pool)
    unet = {}
    for name, only in (("all", ()), ("named", ("cat", "horse", "grass field")), ("cat", ("cat",))):
        plan = Plan(unet_steps=3, init=str(tmp_path / "first"), freeze_text=True, only=only, **small)
        info = pretrain_toy(tmp_path / name, tmp_path / f"ck_{name}", plan, pool)
        unet[name] = load_file(tmp_path / name / "unet" / "diffusion_pytorch_model.safetensors")
    assert info["data"]["unet_rows"] == 4 and unet_rows(classes, ("cat",)).tolist() == [0, 3, 4, 7]
    assert all(torch.equal(unet["all"][k], unet["named"][k]) for k in unet["all"])
    assert any(not torch.equal(unet["all"][k], unet["cat"][k]) for k in unet["all"])
    with pytest.raises(SystemExit, match="no picture of rocket in the pool"):
        unet_rows(classes, ("cat", "rocket"))
