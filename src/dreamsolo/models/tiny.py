"""The `tiny` preset: Stable Diffusion's architecture at toy size, built offline from a seed.

The configuration is fixed (DESIGN.md, issue 5) so benchmarks compare with the reference
DreamBooth script on the same model. Its images are noise: it exercises the pipeline, not the method.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

UNET = dict(
    sample_size=32, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(32, 64), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
)
VAE = dict(
    block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, sample_size=64,
    down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
    up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
)
TEXT = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=5, num_attention_heads=4,
    max_position_embeddings=77, vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
    pad_token_id=49407, projection_dim=32,
)
SCHEDULER = dict(
    beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
    clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
)


def write_clip_bpe(folder: Path) -> None:
    """vocab.json + merges.txt of OpenAI CLIP, rebuilt from the BPE file open_clip ships (no hub)."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe

    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # the same slice open_clip and OpenAI CLIP use
    byte_tokens = list(bytes_to_unicode().values())
    vocab = byte_tokens + [t + "</w>" for t in byte_tokens]
    vocab += ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def build_tiny(dest: Path, seed: int) -> None:
    """Build the tiny pipeline deterministically and save it like a hub model (safetensors)."""
    from dreamsolo.models.build import build

    build(dest, "tiny", seed)
