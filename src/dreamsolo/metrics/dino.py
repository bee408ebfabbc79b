"""DINO evaluator (timm ViT): L2-normalised CLS embeddings and the DINO subject-fidelity score.

DreamBooth's DINO metric uses the self-supervised ViT-S/16 (`vit_small_patch16_224.dino`) because,
unlike CLIP, it tells apart two instances of one class. Weights come from the timm hub, from a local
file (timm's `pretrained_cfg_overlay=dict(file=...)`, the same loader with its checkpoint filters),
or nowhere (random init, where the numbers mean nothing). `toy-dino` is the toy world's DINO (a ViT at
64 px trained by self-distillation on the toy pool: dreamsolo.toyworld.dino), built here and loaded
strictly from its safetensors file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from dreamsolo.metrics.common import embed_images, mean_cosine, seeded

TOY_DINO = "toy-dino"
TOY_DINO_ARGS = dict(img_size=64, patch_size=8, embed_dim=96, depth=4, num_heads=3, mlp_ratio=4.0, num_classes=0)
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)  # timm's default normalisation,
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)  # which the toy DINO is trained with

RANDOM_IMAGE_SIZE = 64
"""Input size of a randomly initialised DINO: a random ViT-S at its native 224 px costs ~12x the
compute for numbers that mean nothing; 64 px (4x4 patches) keeps offline runs fast. Pretrained
models always run at their native size, so real numbers compare with the literature."""


@dataclass
class DinoEvaluator:
    model: Any  # timm VisionTransformer with num_classes=0: forward() returns the normed CLS token
    preprocess: Callable[[Image.Image], torch.Tensor]
    device: torch.device
    name: str
    pretrained: bool

    def image_embeddings(self, images: Sequence[Image.Image], batch_size: int = 16) -> torch.Tensor:
        """(N, D) L2-normalised CLS embeddings, on the CPU."""
        return embed_images(self.model, self.preprocess, images, batch_size, self.device)


def toy_dino() -> Any:
    """The toy DINO's architecture (random weights); its eval transform: resize to 64 px, no crop."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(**TOY_DINO_ARGS)
    model.pretrained_cfg = {"input_size": (3, 64, 64), "crop_pct": 1.0, "interpolation": "bicubic",
                            "mean": tuple(IMAGENET_MEAN.flatten().tolist()), "std": tuple(IMAGENET_STD.flatten().tolist())}
    return model


def _create(name: str, pretrained: bool | str) -> Any:
    import timm

    if name == TOY_DINO:
        with seeded():
            model = toy_dino()
        if isinstance(pretrained, str):  # strict: a file that does not fit fails loudly
            from safetensors.torch import load_file

            model.load_state_dict(load_file(pretrained), strict=True)
        elif pretrained is True:
            raise ValueError("toy-dino has no hub weights: give its weights file as dino_pretrained")
        return model
    if pretrained is False:
        with seeded():
            return timm.create_model(name, pretrained=False, num_classes=0, img_size=RANDOM_IMAGE_SIZE)
    # num_classes=0 in the overlay matches the headless model, so timm loads strictly:
    # a file that does not fit fails loudly instead of leaving layers at random init
    overlay = {"num_classes": 0}
    if isinstance(pretrained, str):
        overlay["file"] = pretrained
    return timm.create_model(name, pretrained=True, num_classes=0, pretrained_cfg_overlay=overlay)


def _preprocess(model: Any) -> Callable[[Image.Image], torch.Tensor]:
    """timm's eval transform for the model (resize, center crop, ImageNet normalisation), at the size
    the model was built for: timm's data config keeps the tag's 224 px even when img_size changes."""
    import timm

    cfg = timm.data.resolve_model_data_config(model)
    cfg["input_size"] = (3, *model.patch_embed.img_size)
    return timm.data.create_transform(**cfg, is_training=False)


def load_dino(name: str, pretrained: bool | str, device: str | torch.device = "cpu") -> DinoEvaluator:
    """A timm ViT; `pretrained`: True = hub weights of `name`, a str = local weights file, False = random."""
    if isinstance(pretrained, str) and not pretrained:
        raise ValueError("dino pretrained: empty path (use false for random init)")
    try:
        model = _create(name, pretrained).to(device).eval()
    except RuntimeError as err:  # timm's "Unknown model (x)": one line naming the key, not a traceback
        if "Unknown model" not in str(err):
            raise
        raise ValueError(f"evaluate.dino_model: {name!r} is not a timm model (timm.list_models() lists them; "
                         "toy-dino is this project's)") from None
    return DinoEvaluator(model=model, preprocess=_preprocess(model), device=torch.device(device),
                         name=name, pretrained=pretrained is not False and not declared_random(pretrained))


RANDOM_INIT = {"dreamsolo_init": "random"}  # safetensors metadata of a weights file saved from a random init


def declared_random(pretrained: bool | str) -> bool:
    """Whether a local weights file says (in its safetensors metadata) that it holds random weights: the
    real-size rehearsal saves DINO that way to load it at its real 224 px; its report must say random."""
    if not isinstance(pretrained, str) or not pretrained.endswith(".safetensors"):
        return False
    from safetensors import safe_open

    with safe_open(pretrained, framework="pt") as f:
        return (f.metadata() or {}).get("dreamsolo_init") == RANDOM_INIT["dreamsolo_init"]


def dino_score(sample_emb: torch.Tensor, ref_emb: torch.Tensor) -> torch.Tensor:
    """(N,) DINO: mean cosine of each sample to the reference instance embeddings (R, D)."""
    return mean_cosine(sample_emb, ref_emb)
