"""The model in training, evaluated every `eval_every` steps on a small prompt subset, and the
`adaptive` step rule on top of those evaluations (issue 14, point 4).

Per evaluation, `eval_images` seeds of two prompts, sampled as the priors were (their sampler steps,
guidance and seeds):
- fidelity: LPIPS of the stage's own prompt (`<S> <class>`; Stage I: `<V> <scene>`) to its photo;
- class drift: LPIPS of the class prompt to the prior image of the same seed, i.e. to the base
  model's sample (the priors are the base model's class samples): prior drift, paired by seed.
The evaluation draws from its own generators inside `fork_rng`, so training takes the same steps
with evaluation on or off. Its cost is the sampling: 2 x eval_images images per evaluation.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from dreamsolo.config import Train

EVAL_FIELDS = ("eval_fidelity", "eval_class_drift")


@dataclass
class StepEvaluator:
    pipe: object
    sampler: object  # DPM-Solver++ from the pipeline's config, as the priors were drawn
    prompt: str
    prior_prompt: str
    seeds: list[int]
    steps: int
    guidance_scale: float
    guidance_rescale: float
    lpips: object
    resolution: int
    photo_features: object  # LPIPS trunk features of the stage's photo and of the priors: fixed,
    prior_features: object  # so computed once, not at every evaluation

    @classmethod
    def build(cls, pipe, image: Path, prompt: str, prior_latents: Path, prior_prompt: str, cfg: Train) -> StepEvaluator:
        from diffusers import DPMSolverMultistepScheduler

        from dreamsolo.metrics.lpips_metric import load_lpips, to_lpips_tensor

        folder = prior_latents.parent
        manifest = json.loads((folder / "manifest.json").read_text())
        n = min(cfg.eval_images, len(manifest["files"]))
        photo = Image.open(image).convert("RGB")
        size = (photo.width, photo.width)
        lp = load_lpips("alex", True, pipe.device)
        priors = [Image.open(folder / f).convert("RGB") for f in manifest["files"][:n]]
        return cls(pipe=pipe, sampler=DPMSolverMultistepScheduler.from_config(pipe.scheduler.config), prompt=prompt,
                   prior_prompt=prior_prompt, seeds=list(manifest["seeds"][:n]), steps=int(manifest["steps"]),
                   guidance_scale=float(manifest["guidance_scale"]),
                   guidance_rescale=float(manifest.get("guidance_rescale", 0.0)), lpips=lp, resolution=photo.width,
                   photo_features=lp.features(to_lpips_tensor([photo], size)),
                   prior_features=lp.features(to_lpips_tensor(priors, size)))

    def _sample(self, prompt: str) -> list[Image.Image]:
        from dreamsolo.sampling import generate

        return generate(self.pipe, [prompt] * len(self.seeds), self.seeds, steps=self.steps,
                        guidance_scale=self.guidance_scale, guidance_rescale=self.guidance_rescale,
                        resolution=self.resolution,
                        batch_size=len(self.seeds), desc="eval", quiet=True)

    def __call__(self) -> dict[str, float]:
        from dreamsolo.metrics.lpips_metric import to_lpips_tensor

        from dreamsolo.models.family import text_encoders

        pipe = self.pipe
        models = [pipe.unet, *(m for _, m in text_encoders(pipe))]  # SDXL: both text encoders
        modes, scheduler = [m.training for m in models], pipe.scheduler
        pipe.scheduler = self.sampler
        for m in models:
            m.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                own, cls_imgs = self._sample(self.prompt), self._sample(self.prior_prompt)
                size = (self.resolution, self.resolution)
                fidelity = self.lpips.distance(self.lpips.features(to_lpips_tensor(own, size)), self.photo_features)
                drift = self.lpips.distance(self.lpips.features(to_lpips_tensor(cls_imgs, size)), self.prior_features)
        finally:
            pipe.scheduler = scheduler
            for m, mode in zip(models, modes):
                m.train(mode)
        return {"eval_fidelity": round(fidelity.mean().item(), 6), "eval_class_drift": round(drift.mean().item(), 6)}


def adaptive_stop(history: list[dict], cfg: Train) -> str | None:
    """Why to stop now, or None: a pure function of the evaluations so far (resumes decide the same).

    Stops where class drift passes `stop_max_drift`, or where fidelity (lower is better) has not
    improved on its best by `stop_min_delta` for `stop_patience` evaluations."""
    evals = [r for r in history if "eval_fidelity" in r]
    if not evals:
        return None
    last = evals[-1]
    if last["eval_class_drift"] > cfg.stop_max_drift:
        return (f"class drift {last['eval_class_drift']:.3f} passed stop_max_drift {cfg.stop_max_drift:g} "
                f"at step {last['step']}")
    best, best_step, since = evals[0]["eval_fidelity"], evals[0]["step"], 0
    for e in evals[1:]:  # evaluations since the last gain of more than min_delta on the best so far
        if e["eval_fidelity"] < best - cfg.stop_min_delta:
            since = 0
        else:
            since += 1
        if e["eval_fidelity"] < best:
            best, best_step = e["eval_fidelity"], e["step"]
    if since >= cfg.stop_patience:
        return (f"LPIPS to the photo did not improve by {cfg.stop_min_delta:g} in {since} evaluations "
                f"(best {best:.3f} at step {best_step}); stopped at step {last['step']}")
    return None
