"""Metrics: offline, tiny evaluators (random tiny-clip, random-trunk LPIPS, random DINO at 64 px)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from dreamsolo.config import Evaluate
from dreamsolo.metrics import METRICS, NOT_PRETRAINED_WARNING
from dreamsolo.metrics.aggregate import pair_result, scores, study_summary, summarise
from dreamsolo.metrics.pair_result import PairResult, Scores, Stat
from dreamsolo.metrics.evaluators import Evaluators, load_evaluators
from dreamsolo.metrics.score import diversity, preservation, score_samples

TINY = Evaluate(clip_model="tiny-clip", clip_pretrained=None, lpips_net="alex", lpips_pretrained=False,
                dino_model="vit_small_patch16_224.dino", dino_pretrained=False, batch_size=4)


def noise(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def manifest(kinds: list[str], per_prompt: int) -> pd.DataFrame:
    rows = [{"file": f"{i * per_prompt + j:04d}.png", "kind": kind, "prompt": f"a photo of sks thing {i}",
             "prompt_clean": f"a photo of thing {i}", "seed": j}
            for i, kind in enumerate(kinds) for j in range(per_prompt)]
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def ev() -> Evaluators:
    return load_evaluators(TINY)


def with_flags(ev: Evaluators, clip: bool, lpips: bool, dino: bool) -> Evaluators:
    return Evaluators(clip=dataclasses.replace(ev.clip, pretrained=clip),
                      lpips=dataclasses.replace(ev.lpips, pretrained=lpips),
                      dino=dataclasses.replace(ev.dino, pretrained=dino))


# --- LPIPS ---------------------------------------------------------------------------------------

def test_lpips_self_is_zero_and_matches_direct_call(ev: Evaluators) -> None:
    import lpips

    a, b, c = noise(1), noise(2), noise(3)
    df = manifest(["composed"], 2)
    scored = score_samples(df, [a, b], instance_ref=a, scene_ref=c, ev=ev, batch_size=4)
    assert scored["lpips_instance"].iloc[0] == pytest.approx(0.0, abs=1e-7)
    # the same numbers as the library's own forward on its own [-1, 1] conversion
    direct = ev.lpips.model(lpips.im2tensor(np.asarray(b)), lpips.im2tensor(np.asarray(a))).item()
    assert scored["lpips_instance"].iloc[1] == pytest.approx(direct, rel=1e-5)
    direct_scene = ev.lpips.model(lpips.im2tensor(np.asarray(b)), lpips.im2tensor(np.asarray(c))).item()
    assert scored["lpips_scene"].iloc[1] == pytest.approx(direct_scene, rel=1e-5)
    assert direct > 0


# --- CLIP ----------------------------------------------------------------------------------------

def test_clip_t_is_cosine_of_open_clip_embeddings_of_clean_prompt(ev: Evaluators) -> None:
    img = noise(4)
    df = manifest(["composed"], 1)
    scored = score_samples(df, [img], noise(5), noise(6), ev)
    with torch.no_grad():
        im = ev.clip.model.encode_image(ev.clip.preprocess(img)[None])
        tx = ev.clip.model.encode_text(ev.clip.tokenizer([df["prompt_clean"].iloc[0]]))
    expected = torch.nn.functional.cosine_similarity(im, tx).item()
    assert scored["clip_t"].iloc[0] == pytest.approx(expected, abs=1e-5)
    with torch.no_grad():  # the identifier-bearing prompt gives another number: prompt_clean was used
        tx_raw = ev.clip.model.encode_text(ev.clip.tokenizer([df["prompt"].iloc[0]]))
    assert torch.nn.functional.cosine_similarity(im, tx_raw).item() != pytest.approx(expected, abs=1e-6)


def test_random_init_is_seeded_and_marked_random(ev: Evaluators) -> None:
    from dreamsolo.metrics.clip import load_clip

    again = load_clip("tiny-clip", None)
    imgs = [noise(7), noise(8)]
    assert torch.allclose(again.image_embeddings(imgs), ev.clip.image_embeddings(imgs), atol=1e-6)
    assert not again.pretrained


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_clip_loads_local_weights_file(tmp_path, suffix: str, ev: Evaluators) -> None:
    import open_clip
    from safetensors.torch import save_file

    from dreamsolo.metrics.clip import load_clip

    torch.manual_seed(123)  # not the loader's init seed, so a silent random init would show
    saved, _, _ = open_clip.create_model_and_transforms("tiny-clip")
    path = tmp_path / f"tiny-clip{suffix}"
    state = {k: v.contiguous() for k, v in saved.state_dict().items()}
    save_file(state, path) if suffix == ".safetensors" else torch.save(state, path)
    loaded = load_clip("tiny-clip", str(path))
    assert loaded.pretrained
    imgs, texts = [noise(9), noise(10)], ["a photo of a cat", "a cup"]
    saved.eval()
    with torch.no_grad():
        ref_i = torch.nn.functional.normalize(saved.encode_image(torch.stack([loaded.preprocess(i) for i in imgs])), dim=-1)
        ref_t = torch.nn.functional.normalize(saved.encode_text(loaded.tokenizer(texts)), dim=-1)
    assert torch.allclose(loaded.image_embeddings(imgs), ref_i, atol=1e-6)
    assert torch.allclose(loaded.text_embeddings(texts), ref_t, atol=1e-6)
    assert not torch.allclose(ev.clip.image_embeddings(imgs), ref_i, atol=1e-3)


# --- DINO ----------------------------------------------------------------------------------------

def test_dino_loads_local_weights_file_strictly(tmp_path) -> None:
    import timm
    from safetensors.torch import save_file

    from dreamsolo.metrics.dino import load_dino

    torch.manual_seed(123)
    saved = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    path = tmp_path / "vit_tiny.safetensors"
    save_file(saved.state_dict(), path)
    loaded = load_dino("vit_tiny_patch16_224", str(path))
    assert loaded.pretrained
    imgs = [noise(11), noise(12)]
    with torch.no_grad():
        ref = torch.nn.functional.normalize(saved(torch.stack([loaded.preprocess(i) for i in imgs])), dim=-1)
    assert torch.allclose(loaded.image_embeddings(imgs), ref, atol=1e-6)
    # a file for another architecture fails instead of leaving blocks at random init
    short = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=2)
    save_file(short.state_dict(), tmp_path / "short.safetensors")
    with pytest.raises(RuntimeError, match="Missing key"):
        load_dino("vit_tiny_patch16_224", str(tmp_path / "short.safetensors"))


def test_random_dino_runs_small_and_normalised(ev: Evaluators) -> None:
    emb = ev.dino.image_embeddings([noise(13, 96), noise(14, 96)])
    assert emb.shape == (2, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)
    assert tuple(ev.dino.model.patch_embed.img_size) == (64, 64)


# --- scoring -------------------------------------------------------------------------------------

def test_references_are_embedded_once_per_pair(ev: Evaluators, monkeypatch) -> None:
    seen = {"clip": 0, "text": 0, "dino": 0, "lpips": 0}

    def counting(key, fn):
        def wrapped(x, *args, **kwargs):
            seen[key] += x.shape[0]
            return fn(x, *args, **kwargs)
        return wrapped

    monkeypatch.setattr(ev.clip.model, "encode_image", counting("clip", ev.clip.model.encode_image))
    monkeypatch.setattr(ev.clip.model, "encode_text", counting("text", ev.clip.model.encode_text))
    monkeypatch.setattr(ev.dino.model, "forward", counting("dino", ev.dino.model.forward))
    monkeypatch.setattr(ev.lpips.model.net, "forward", counting("lpips", ev.lpips.model.net.forward))
    n = 10
    df = manifest(["composed", "recontext", "class_instance", "class_scene", "scene"], 2)
    score_samples(df, [noise(100 + i) for i in range(n)], noise(1), noise(2), ev, batch_size=4)
    assert seen == {"clip": n + 2, "text": 5, "dino": n + 2, "lpips": n + 2}  # two references: instance, scene


def test_scores_diversity_and_preservation(ev: Evaluators) -> None:
    kinds = ["composed", "recontext", "class_instance"]
    df = manifest(kinds, 3)
    same = noise(20)
    images = [same, same, same] + [noise(21 + i) for i in range(6)]
    scored = score_samples(df, images, noise(1), noise(2), ev)
    assert list(scored.columns[-len(METRICS):]) == list(METRICS)
    assert not scored[list(METRICS)].isna().any().any()
    div = diversity(scored, images, ev)
    assert list(div["kind"]) == kinds and list(div["n"]) == [3, 3, 3]
    assert div["div"].iloc[0] == pytest.approx(0.0, abs=1e-7)  # three identical images
    assert (div["div"].iloc[1:] > 0).all()
    one = diversity(scored.iloc[:1], images[:1], ev)
    assert math.isnan(one["div"].iloc[0])
    pres = preservation(scored)
    assert pres.tolist() == scored.loc[scored["kind"] == "class_instance", "dino"].tolist()


def test_scene_fidelity_is_measured_against_the_scene_photo(ev: Evaluators) -> None:
    inst, scene = noise(1), noise(2)
    scored = score_samples(manifest(["composed"], 2), [scene, inst], inst, scene, ev)
    # a sample equal to the scene: cosine 1 to the scene and LPIPS 0; equal to the instance: the mirror image
    assert scored["clip_i_scene"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert scored["dino_scene"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    assert scored["clip_i"].iloc[1] == pytest.approx(1.0, abs=1e-5)
    assert scored["dino"].iloc[1] == pytest.approx(1.0, abs=1e-5)
    assert scored["clip_i_scene"].iloc[1] < 0.999 and scored["dino_scene"].iloc[1] < 0.999
    assert scored["lpips_scene"].iloc[0] == pytest.approx(0.0, abs=1e-6)


def test_scoring_rejects_mismatched_inputs(ev: Evaluators) -> None:
    with pytest.raises(ValueError, match="2 images for 3"):
        score_samples(manifest(["composed"], 3), [noise(1), noise(2)], noise(3), noise(4), ev)
    with pytest.raises(ValueError, match="prompt_clean"):
        score_samples(manifest(["composed"], 1).drop(columns="prompt_clean"), [noise(1)], noise(3), noise(4), ev)


# --- aggregates ----------------------------------------------------------------------------------

def test_summarise_hand_computed() -> None:
    assert summarise([1.0, 2.0, 3.0, float("nan")]) == {"mean": 2.0, "std": 1.0, "n": 3}
    assert summarise([5.0]) == {"mean": 5.0, "std": 0.0, "n": 1}
    assert summarise([float("nan"), None]) == {"mean": None, "std": None, "n": 0}
    s = summarise([0.1, 0.4])
    assert s["mean"] == pytest.approx(0.25) and s["std"] == pytest.approx(math.sqrt(0.045))


def test_pair_summary_known_values(ev: Evaluators) -> None:
    df = pd.DataFrame({"kind": ["composed", "composed", "class_instance", "class_instance"],
                       "clip_t": [0.2, 0.4, 0.1, float("nan")], "clip_i": [0.5, 0.5, 0.5, 0.5],
                       "dino": [0.6, 0.8, 0.3, 0.5], "lpips_instance": [0.1, 0.2, 0.3, 0.4],
                       "lpips_scene": [0.4, 0.3, 0.2, 0.1]})
    div = pd.DataFrame({"prompt": ["p", "q"], "kind": ["composed", "class_instance"], "n": [2, 2],
                        "div": [0.2, 0.4]})
    tuned = scores(df, div, preservation(df))
    out = pair_result(tuned, tuned, "cat_grass", "animal", with_flags(ev, True, True, True),
                      "models/base/tiny").to_json()
    assert list(out) == ["pair", "category", "evaluators_pretrained", "random_metrics", "n_samples", "metrics",
                         "by_kind", "div", "pres", "base", "delta"]
    assert out["n_samples"] == 4
    assert out["metrics"]["clip_t"]["mean"] == pytest.approx(0.7 / 3) and out["metrics"]["clip_t"]["n"] == 3
    assert out["metrics"]["lpips_instance"]["mean"] == pytest.approx(0.25)
    assert out["by_kind"]["composed"]["dino"]["mean"] == pytest.approx(0.7)
    assert out["by_kind"]["composed"]["dino"]["std"] == pytest.approx(math.sqrt(0.02))
    assert out["by_kind"]["class_instance"]["clip_t"] == {"mean": 0.1, "std": 0.0, "n": 1}
    assert out["div"]["mean"] == pytest.approx(0.3) and out["div"]["n"] == 2
    assert out["pres"]["mean"] == pytest.approx(0.4) and out["pres"]["n"] == 2


@pytest.mark.parametrize("flags", [(True, True, True), (False, True, True), (True, False, True),
                                   (True, True, False), (False, False, False)])
def test_warning_present_iff_an_evaluator_is_random(ev: Evaluators, flags) -> None:
    bundle = with_flags(ev, *flags)
    df = pd.DataFrame({"kind": ["composed"], **{m: [0.5] for m in METRICS}})
    result = pair_result(scores(df, [], []), scores(df, [], []), "p", "object", bundle, "models/base/tiny")
    out = result.to_json()
    assert bundle.pretrained == all(flags) == out["evaluators_pretrained"]
    assert ("warning" in out) == (not all(flags))
    clip, lpips, dino = flags  # which metrics each random evaluator makes meaningless, in table order
    expected = [m for m, ok in (("clip_t", clip), ("clip_i", clip), ("dino", dino), ("lpips_instance", lpips),
                                ("lpips_scene", lpips), ("clip_i_scene", clip), ("dino_scene", dino),
                                ("div", lpips), ("pres", dino)) if not ok]
    assert out["random_metrics"] == expected
    if not any(flags):
        assert out["warning"] == NOT_PRETRAINED_WARNING
    elif expected:  # the warning names every random metric, and no pretrained one as random
        random_part, real_part = out["warning"].split("; pretrained: ")
        assert all(m in random_part for m in expected) and not any(m in real_part for m in expected)
    study = study_summary([result])
    assert ("warning" in study) == (not all(flags)) and study["random_metrics"] == expected
    cfg = dataclasses.replace(TINY, clip_pretrained="openai" if flags[0] else None,
                              lpips_pretrained=flags[1], dino_pretrained=flags[2])
    assert cfg.pretrained == all(flags)


def test_study_summary_mean_of_pair_means(ev: Evaluators) -> None:
    def pair(name: str, category: str, clip_t: float, div: float, pretrained: bool = True) -> PairResult:
        s = Scores(n_samples=4, metrics={"clip_t": Stat(clip_t, 0.0, 4)}, by_kind={}, div=Stat(div, 0.0, 2),
                   pres=Stat(None, None, 0))
        return PairResult(pair=name, category=category, evaluators_pretrained=pretrained,
                          warning=None if pretrained else NOT_PRETRAINED_WARNING, tuned=s, base=s,
                          base_model="models/base/tiny")

    pairs = [pair("a", "animal", 0.2, 0.1), pair("b", "animal", 0.4, 0.3), pair("c", "object", 0.6, 0.5)]
    out = study_summary(pairs)
    assert "warning" not in out and out["evaluators_pretrained"] and out["n_pairs"] == 3
    assert out["overall"]["clip_t"]["mean"] == pytest.approx(0.4)
    assert out["overall"]["clip_t"]["std"] == pytest.approx(0.2) and out["overall"]["clip_t"]["n"] == 3
    assert out["by_category"]["animal"]["clip_t"]["mean"] == pytest.approx(0.3)
    assert out["by_category"]["animal"]["clip_t"]["std"] == pytest.approx(math.sqrt(0.02))
    assert out["by_category"]["object"]["div"] == {"mean": 0.5, "std": 0.0, "n": 1}
    assert out["overall"]["pres"] == {"mean": None, "std": None, "n": 0}
    assert out["overall"]["dino"]["n"] == 0
    mixed = study_summary([*pairs, pair("d", "human", 0.1, 0.1, pretrained=False)])
    assert mixed["warning"] == NOT_PRETRAINED_WARNING and not mixed["evaluators_pretrained"]


# --- loading -------------------------------------------------------------------------------------

def test_openai_tags_get_quick_gelu() -> None:
    from dreamsolo.metrics.clip import _quick_gelu

    # open_clip's ViT-B-32 config uses GELU; OpenAI's weights need QuickGELU (tag metadata, no download)
    assert _quick_gelu("ViT-B-32", "openai") is True
    assert _quick_gelu("ViT-B-32", "laion2b_s34b_b79k") is False
    assert _quick_gelu("tiny-clip", None) is False


def test_load_evaluators_resolves_weights_against_root(tmp_path) -> None:
    import open_clip
    from safetensors.torch import save_file

    model, _, _ = open_clip.create_model_and_transforms("tiny-clip")
    (tmp_path / "weights").mkdir()
    save_file(model.state_dict(), tmp_path / "weights" / "clip.safetensors")
    cfg = dataclasses.replace(TINY, clip_pretrained="weights/clip.safetensors")
    loaded = load_evaluators(cfg, root=tmp_path)
    assert loaded.clip.pretrained and not loaded.pretrained
    assert loaded.random_metrics == ("dino", "lpips_instance", "lpips_scene", "dino_scene", "div", "pres")  # TINY: lpips, dino off
    assert loaded.warning == ("random evaluators, numbers not meaningful: dino, dino_scene, pres (DINO); lpips_instance, "
                              "lpips_scene, div (LPIPS); pretrained: clip_t, clip_i, clip_i_scene (CLIP)")
