"""Are the two identifiers interchangeable? Each one against the other in front of the same noun.

The study's checks compare a fine-tuned prompt with the class prompt or the base model, which a run
with the identifiers swapped in training passes as well: only `<S> cat` against `<V> cat` (to the
instance photo) and `<V> grass field` against `<S> grass field` (to the scene photo) tell them apart.
Used by tests/test_method.py (one pair) and bench/crossed_identifiers.py (every pair of a reproduced study).
"""

from __future__ import annotations

import torch


def crossed_identifiers(study, pair_id: str, lpips=None) -> dict[str, list[float]]:
    """Per seed (the study's sample seeds): LPIPS(<S> noun) - LPIPS(<V> noun) to the instance photo, and
    LPIPS(<V> noun) - LPIPS(<S> noun) to the scene photo, sampled from the pair's Stage II weights with the
    study's sampler. < 0 where each identifier binds its own photo."""
    from PIL import Image

    from dreamsolo.layout import model_dir, prepared_dir
    from dreamsolo.metrics.lpips_metric import load_lpips
    from dreamsolo.sampling import generate, load_for_sampling

    pair, p, cfg = study.pair(pair_id), study.prompts, study.sample
    inst, scene = study.class_noun(pair.instance_class), study.class_noun(pair.scene_class)
    pipe = load_for_sampling(model_dir(study.root, pair_id, "train_instance"), torch.float32)
    seeds = [cfg.seed + i for i in range(cfg.num_images)]
    prompts = [f"a photo of {tok} {noun}" for noun in (inst, scene) for tok in (p.instance_token, p.scene_token)]
    ims = generate(pipe, [q for q in prompts for _ in seeds], seeds * len(prompts), steps=cfg.steps,
                   guidance_scale=cfg.guidance_scale, guidance_rescale=cfg.guidance_rescale,
                   resolution=study.preset.resolution, batch_size=8, desc=f"{pair_id}: crossed identifiers")
    refs = {k: Image.open(prepared_dir(study.root, pair_id) / f"{k}.png").convert("RGB") for k in ("instance", "scene")}
    lp, n, size = lpips or load_lpips("alex", pretrained=True), len(seeds), ims[0].size

    def dist(i: int, ref: str) -> torch.Tensor:
        return lp.paired(ims[i * n:(i + 1) * n], [refs[ref]] * n, size)

    return {"instance": (dist(0, "instance") - dist(1, "instance")).tolist(),
            "scene": (dist(3, "scene") - dist(2, "scene")).tolist()}
