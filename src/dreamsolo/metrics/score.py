"""Per-sample scores of one pair's samples, plus DIV (per prompt) and PRES (class-prompt samples).

Every reference (instance image, scene image, each distinct prompt) is embedded exactly once per
pair and compared against all samples, so the cost is N sample passes plus a few reference passes.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd
from PIL import Image

from dreamsolo.metrics import METRICS
from dreamsolo.metrics.clip import clip_i, clip_t
from dreamsolo.metrics.dino import dino_score
from dreamsolo.metrics.evaluators import Evaluators
from dreamsolo.metrics.lpips_metric import to_lpips_tensor

PRES_KIND = "class_instance"
"""Sample kind whose similarity to the instance is PRES: the class prompt, with no identifier."""


def _check(manifest: pd.DataFrame, images: Sequence[Image.Image], columns: Sequence[str]) -> None:
    if len(manifest) != len(images):
        raise ValueError(f"{len(images)} images for {len(manifest)} manifest rows")
    if len(images) == 0:
        raise ValueError("no samples to score")
    missing = [c for c in columns if c not in manifest.columns]
    if missing:
        raise ValueError(f"manifest lacks column(s): {', '.join(missing)}")


def _clip_scores(prompts: Sequence[str], images: Sequence[Image.Image], instance_ref: Image.Image,
                 scene_ref: Image.Image, ev: Evaluators, batch_size: int) -> tuple[list[float], list[float], list[float]]:
    """(CLIP-T, CLIP-I to the instance, CLIP-I to the scene) per sample; each distinct prompt is encoded once."""
    sample_emb = ev.clip.image_embeddings(images, batch_size)
    ref_emb = ev.clip.image_embeddings([instance_ref, scene_ref], 2)
    row_of = {p: i for i, p in enumerate(dict.fromkeys(prompts))}
    text_emb = ev.clip.text_embeddings(list(row_of), batch_size)
    per_sample_text = text_emb[[row_of[p] for p in prompts]]
    return (clip_t(sample_emb, per_sample_text).tolist(), clip_i(sample_emb, ref_emb[:1]).tolist(),
            clip_i(sample_emb, ref_emb[1:]).tolist())


def _lpips_scores(images: Sequence[Image.Image], instance_ref: Image.Image, scene_ref: Image.Image,
                  ev: Evaluators, batch_size: int) -> tuple[list[float], list[float]]:
    """(LPIPS to instance, LPIPS to scene) per sample; each sample and reference is embedded once.
    References are resized to the sample size (both are `resolution` px in the pipeline)."""
    size = images[0].size
    ref_feats = ev.lpips.features(to_lpips_tensor([instance_ref, scene_ref], size))
    inst, scene = [f[:1] for f in ref_feats], [f[1:] for f in ref_feats]
    to_inst, to_scene = ev.lpips.distances_to(images, [inst, scene], size, batch_size)
    return to_inst.tolist(), to_scene.tolist()


def score_samples(manifest: pd.DataFrame, images: Sequence[Image.Image], instance_ref: Image.Image,
                  scene_ref: Image.Image, ev: Evaluators, batch_size: int = 16) -> pd.DataFrame:
    """The manifest (row i = images[i]) plus one column per metric in METRICS, for every sample.

    CLIP-T uses `prompt_clean` (identifier tokens removed), as in DreamBooth; CLIP-I and DINO are the
    cosine to the instance reference (`clip_i_scene`, `dino_scene`: to the scene reference); LPIPS is
    measured to the instance and to the scene reference.
    Which kinds each metric is meaningful for is the reader's choice (the pair summary has `by_kind`).
    """
    _check(manifest, images, ["prompt_clean"])
    images = list(images)
    out = manifest.reset_index(drop=True).copy()
    out["clip_t"], out["clip_i"], clip_scene = _clip_scores(out["prompt_clean"].astype(str).tolist(), images,
                                                            instance_ref, scene_ref, ev, batch_size)
    sample_dino = ev.dino.image_embeddings(images, batch_size)
    ref_dino = ev.dino.image_embeddings([instance_ref, scene_ref], 2)
    out["dino"] = dino_score(sample_dino, ref_dino[:1]).tolist()
    out["lpips_instance"], out["lpips_scene"] = _lpips_scores(images, instance_ref, scene_ref, ev, batch_size)
    # fidelity to the scene too (CustomConcept101 scores each concept of a composed prompt on its own)
    out["clip_i_scene"], out["dino_scene"] = clip_scene, dino_score(sample_dino, ref_dino[1:]).tolist()
    assert list(out.columns[-len(METRICS):]) == list(METRICS)
    return out


def diversity(df: pd.DataFrame, images: Sequence[Image.Image], ev: Evaluators,
              batch_size: int = 16) -> pd.DataFrame:
    """DIV: mean pairwise LPIPS among the samples of each prompt (higher = more diverse).

    One row per prompt, in order of first appearance: `prompt, kind, n, div`; `div` is NaN for a
    prompt with a single sample (no pairs).
    """
    _check(df, images, ["prompt", "kind"])
    table = df.reset_index(drop=True)
    size = images[0].size
    rows = []
    for prompt, group in table.groupby("prompt", sort=False):
        group_images = [images[i] for i in group.index]
        rows.append({"prompt": prompt, "kind": group["kind"].iloc[0], "n": len(group),
                     "div": ev.lpips.mean_pairwise(group_images, size, batch_size)})
    return pd.DataFrame(rows, columns=["prompt", "kind", "n", "div"])


def preservation(scored: pd.DataFrame) -> pd.Series:
    """PRES per class-prompt sample: DINO cosine to the instance reference (lower = prior preserved).

    DINO rather than CLIP-I, as in DreamBooth's PRES: PRES asks whether the fine-tuned model now draws
    *this* instance when asked for any member of the class. CLIP embeds class semantics, so any cat
    scores high against the reference cat and the drift hides under that floor; DINO's self-supervised
    features separate instances of one class, so a rise in PRES is instance leakage.
    """
    if "kind" not in scored.columns or "dino" not in scored.columns:
        raise ValueError("preservation needs the scored table (columns `kind` and `dino`)")
    return scored.loc[scored["kind"] == PRES_KIND, "dino"].reset_index(drop=True)


def drift_to_base(tuned: pd.DataFrame, tuned_images: Sequence[Image.Image], base: pd.DataFrame,
                  base_images: Sequence[Image.Image], ev: Evaluators, batch_size: int = 16) -> list[float]:
    """Per fine-tuned sample: LPIPS to the base model's sample of the same prompt and seed (metrics.method.DRIFT)."""
    _check(tuned, tuned_images, ["prompt", "seed"])
    _check(base, base_images, ["prompt", "seed"])
    at = {(p, int(s)): i for i, (p, s) in enumerate(zip(base["prompt"], base["seed"]))}
    keys = [(p, int(s)) for p, s in zip(tuned["prompt"], tuned["seed"])]
    missing = [k for k in keys if k not in at]
    if missing:
        raise ValueError(f"the base model has no sample of {missing[0][0]!r} at seed {missing[0][1]}")
    partner = [base_images[at[k]] for k in keys]
    return ev.lpips.paired(list(tuned_images), partner, tuned_images[0].size, batch_size).tolist()
