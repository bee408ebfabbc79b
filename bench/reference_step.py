"""Seconds per training step of the *reference path*: what diffusers' examples/dreambooth/train_dreambooth.py
does every step, replayed here on the same model so both figures come from the same machine at the same
time (this box's speed drifts by ~25 % within an hour). Prints ONE JSON line.

Per step, as the reference does with prior preservation, batch 1 + 1, fp32, full UNet fine-tune: a
DataLoader draws an instance and a class example; each is read from disk, EXIF-transposed, resized,
random-cropped, normalised and its prompt tokenised; both images are VAE-encoded and a latent sampled;
the text encoder runs on both prompts; the UNet predicts the noise of the concatenated batch; instance
and prior MSE; backward; gradient clipping; torch AdamW (default, not fused); lr scheduler;
`zero_grad(set_to_none=False)` (the script's default); a tqdm bar with the loss. It is a replay of the
reference's per-step work, not the script itself (that is not shipped with diffusers' package).

    python bench/reference_step.py                       # compare with: python bench/train_step.py
    python bench/reference_step.py --model-dir models/base/tiny --steps 30
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model-dir", type=Path, help="diffusers folder (default: build the tiny preset in a temp dir)")
    p.add_argument("--pair", default="cat_grass", help="its instance photo is the training image")
    p.add_argument("--class-images", type=int, default=16)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int)
    a = p.parse_args()
    load_avg = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="dreamsolo-refstep-"))
    try:
        result = run(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps({**result, "loadavg_start": load_avg, "loadavg_end": os.getloadavg()}))


def run(a: argparse.Namespace, tmp: Path) -> dict:
    import torch

    if a.threads:
        torch.set_num_threads(a.threads)
    unet, vae, text_encoder, tokenizer, noise_scheduler = load_models(a.model_dir, tmp)
    size = vae.config.sample_size
    loader = make_loader(tmp, a.pair, a.class_images, size, tokenizer)
    timed = train(a.warmup + a.steps, loader, unet, vae, text_encoder, noise_scheduler)[a.warmup:]
    return {
        "bench": "reference_step", "model": str(a.model_dir or "tiny (built)"), "resolution": size,
        "s_per_step": {"median": round(statistics.median(timed), 5), "min": round(min(timed), 5),
                       "max": round(max(timed), 5), "mean": round(statistics.mean(timed), 5)},
        "steps_timed": len(timed), "threads": torch.get_num_threads(),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
    }


def load_models(model: Path | None, tmp: Path) -> tuple:
    """UNet (trained), frozen VAE and text encoder, tokenizer, DDPM scheduler, as the reference loads them."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    if model is None:
        from dreamsolo.models.tiny import build_tiny

        model = tmp / "tiny"
        build_tiny(model, 0)
    unet = UNet2DConditionModel.from_pretrained(model, subfolder="unet")
    vae = AutoencoderKL.from_pretrained(model, subfolder="vae").requires_grad_(False)
    text_encoder = CLIPTextModel.from_pretrained(model, subfolder="text_encoder").requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(model, subfolder="tokenizer")
    noise_scheduler = DDPMScheduler.from_pretrained(model, subfolder="scheduler")
    return unet, vae, text_encoder, tokenizer, noise_scheduler


def make_loader(tmp: Path, pair: str, class_images: int, size: int, tokenizer):
    """The reference's DataLoader: every example re-read from disk, EXIF-transposed, resized,
    random-cropped, normalised, its prompt tokenised; batches of 1 instance + 1 class example."""
    import torch
    from PIL import Image
    from PIL.ImageOps import exif_transpose
    from torchvision import transforms

    # class images present, as JPEGs (what the reference writes); the instance photo as committed
    class_dir = tmp / "class"
    class_dir.mkdir()
    for i in range(class_images):
        Image.new("RGB", (size, size), (i * 13 % 256, 90, 160)).save(class_dir / f"{i}.jpg")
    inst = next(f for f in (REPO / "data/pairs" / pair).iterdir() if f.stem.lower() == "instance")
    tf = transforms.Compose([transforms.Resize(size), transforms.RandomCrop(size), transforms.ToTensor(),
                             transforms.Normalize([0.5], [0.5])])

    def image(path: Path) -> torch.Tensor:
        return tf(exif_transpose(Image.open(path)).convert("RGB"))

    def ids(prompt: str) -> torch.Tensor:
        return tokenizer(prompt, truncation=True, padding="max_length",
                         max_length=tokenizer.model_max_length, return_tensors="pt").input_ids

    class Data(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return class_images

        def __getitem__(self, i: int) -> dict:
            return {"instance": image(inst), "instance_ids": ids("a photo of sks cat"),
                    "class": image(class_dir / f"{i}.jpg"), "class_ids": ids("a photo of a cat")}

    def collate(examples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
        pixels = [e["instance"] for e in examples] + [e["class"] for e in examples]
        token_ids = [e["instance_ids"] for e in examples] + [e["class_ids"] for e in examples]
        return torch.stack(pixels).float(), torch.cat(token_ids)

    return torch.utils.data.DataLoader(Data(), batch_size=1, shuffle=True, collate_fn=collate)


def train(total: int, loader, unet, vae, text_encoder, noise_scheduler) -> list[float]:
    """`total` reference steps; seconds of each, end to end (data loading included)."""
    import torch
    import torch.nn.functional as F
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    optimizer = torch.optim.AdamW(unet.parameters(), lr=5e-6, weight_decay=1e-2)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer, num_warmup_steps=0, num_training_steps=total)
    torch.manual_seed(0)
    unet.train()
    times: list[float] = []
    bar = tqdm(total=total, desc="reference path")
    t_prev = time.perf_counter()
    while len(times) + 1 < total:
        for pixels, ids in loader:
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            noise = torch.randn_like(latents)
            t = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],)).long()
            noisy = noise_scheduler.add_noise(latents, noise, t)
            hidden = text_encoder(ids)[0]
            pred = unet(noisy, t, hidden).sample
            pred, pred_prior = torch.chunk(pred, 2, dim=0)
            target, target_prior = torch.chunk(noise, 2, dim=0)
            loss = F.mse_loss(pred.float(), target.float()) + F.mse_loss(pred_prior.float(), target_prior.float())
            loss.backward()
            torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=False)
            bar.update(1)
            bar.set_postfix(loss=loss.detach().item(), lr=lr_scheduler.get_last_lr()[0])
            now = time.perf_counter()
            times.append(now - t_prev)
            t_prev = now
            if len(times) >= total:
                break
    bar.close()
    return times


if __name__ == "__main__":
    main()
