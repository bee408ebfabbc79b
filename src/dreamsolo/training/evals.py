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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from dreamsolo.config import Train

EVAL_FIELDS = ("eval_fidelity", "eval_class_drift")


@dataclass
class StepEvaluator:
    pipe: object
    prompt: str
    prior_prompt: str
    seeds: list[int]
    priors: list[Image.Image]
    photo: Image.Image
    steps: int
    guidance_scale: float
    lpips: object
    resolution: int

    @classmethod
    def build(cls, pipe, image: Path, prompt: str, prior_latents: Path, prior_prompt: str, cfg: Train) -> StepEvaluator:
        from dreamsolo.metrics.lpips_metric import load_lpips

        folder = prior_latents.parent
        manifest = json.loads((folder / "manifest.json").read_text())
        n = min(cfg.eval_images, len(manifest["files"]))
        photo = Image.open(image).convert("RGB")
        return cls(pipe=pipe, prompt=prompt, prior_prompt=prior_prompt, seeds=list(manifest["seeds"][:n]),
                   priors=[Image.open(folder / f).convert("RGB") for f in manifest["files"][:n]], photo=photo,
                   steps=int(manifest["steps"]), guidance_scale=float(manifest["guidance_scale"]),
                   lpips=load_lpips("alex", True, pipe.device), resolution=photo.width)

    def _sample(self, prompt: str) -> list[Image.Image]:
        from dreamsolo.sampling import generate

        return generate(self.pipe, [prompt] * len(self.seeds), self.seeds, steps=self.steps,
                        guidance_scale=self.guidance_scale, resolution=self.resolution,
                        batch_size=len(self.seeds), desc="eval", quiet=True)

    def __call__(self) -> dict[str, float]:
        from diffusers import DPMSolverMultistepScheduler

        pipe = self.pipe
        modes, scheduler = (pipe.unet.training, pipe.text_encoder.training), pipe.scheduler
        pipe.scheduler = DPMSolverMultistepScheduler.from_config(scheduler.config)  # as the priors were drawn
        pipe.unet.eval()
        pipe.text_encoder.eval()
        try:
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                own, cls_imgs = self._sample(self.prompt), self._sample(self.prior_prompt)
                size = (self.resolution, self.resolution)
                ref = self.lpips.features(_tensor([self.photo], size))
                fidelity = self.lpips.distances_to(own, [ref], size)[0]
                drift = self.lpips.paired(cls_imgs, self.priors, size)
        finally:
            pipe.scheduler = scheduler
            pipe.unet.train(modes[0])
            pipe.text_encoder.train(modes[1])
        return {"eval_fidelity": round(fidelity.mean().item(), 6), "eval_class_drift": round(drift.mean().item(), 6)}


def _tensor(images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
    from dreamsolo.metrics.lpips_metric import to_lpips_tensor

    return to_lpips_tensor(images, size)


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
    best_i = min(range(len(evals)), key=lambda i: evals[i]["eval_fidelity"])
    improved = [i for i in range(1, len(evals))
                if evals[i]["eval_fidelity"] < min(e["eval_fidelity"] for e in evals[:i]) - cfg.stop_min_delta]
    since = len(evals) - 1 - (improved[-1] if improved else 0)
    if since >= cfg.stop_patience:
        return (f"LPIPS to the photo did not improve by {cfg.stop_min_delta:g} in {since} evaluations "
                f"(best {evals[best_i]['eval_fidelity']:.3f} at step {evals[best_i]['step']}); stopped at step {last['step']}")
    return None
