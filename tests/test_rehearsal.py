"""The real-size rehearsal (issue 27): the committed architectures, the `build:<arch>` source, what the
rehearsal found, and bench/rehearsal.py itself end to end on the tiny build (so the script cannot rot)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def _train(**kw):
    from dreamsolo.config import Train, build

    data = dict(steps=2, lr=1e-5, prior_weight=1.0, seed=0, batch_size=1, grad_accum=1, warmup_steps=0,
                log_every=1, checkpoint_every=100, keep_checkpoints=1)
    return build(Train, data | kw, "test")


@pytest.mark.parametrize("arch, unet, text, cross", [
    ("sd15", 859_520_964, 123_060_480, 768),  # the published parameter counts of SD 1.5's UNet and CLIP ViT-L/14 text
    ("sd21-base", 865_910_724, 340_387_840, 1024),  # SD 2.1-base: OpenCLIP ViT-H/14 text, 23 layers
])
def test_architectures_have_the_published_sizes(arch, unet, text, cross):
    from dreamsolo.models.build import arch_config, build_modules, build_scheduler

    u, v, t = build_modules(arch, 0, "meta")  # sizes only: no weights in memory
    assert sum(p.numel() for p in u.parameters()) == unet
    assert sum(p.numel() for p in t.parameters()) == text
    assert sum(p.numel() for p in v.parameters()) == 83_653_863
    assert u.config.cross_attention_dim == t.config.hidden_size == cross
    cfg = arch_config(arch)
    assert cfg["resolution"] == 512
    sched = build_scheduler(arch)  # the published config's keys, including those PNDM ignores
    assert type(sched).__name__ == "PNDMScheduler" and sched.config.prediction_type == "epsilon"


def test_build_source_names_an_architecture(tmp_path):
    from dreamsolo.models.build import arch_of
    from dreamsolo.models.sources import source_kind

    assert arch_of("build") == "tiny" and arch_of("build:sd21-base") == "sd21-base" and arch_of("a/b") is None
    assert source_kind("build:sd15", tmp_path) == "build"
    assert source_kind("build:sdxl", tmp_path) == "build"  # SDXL base (tests/test_sdxl.py)
    with pytest.raises(ValueError, match="unknown architecture 'sd3'"):
        source_kind("build:sd3", tmp_path)


def test_tiny_build_is_unchanged_by_the_generalised_builder(tmp_path):
    """build_tiny now goes through models.build: the same seeded weights as the fixed tiny config."""
    from dreamsolo.models.build import build_modules
    from dreamsolo.models.tiny import build_tiny
    from safetensors.torch import load_file

    build_tiny(tmp_path / "m", 0)
    saved = load_file(tmp_path / "m/unet/diffusion_pytorch_model.safetensors")
    unet, _, _ = build_modules("tiny", 0)
    assert all(torch.equal(saved[k], v) for k, v in unet.state_dict().items())
    assert (tmp_path / "m/tokenizer/vocab.json").is_file()


def test_full_training_over_a_lora_model_trains_the_unet(tmp_path):
    """Found by the rehearsal: Stage II `full` over a LoRA Stage I got an empty parameter list, because a
    model loaded from a LoRA folder (fused, adapters unloaded) comes back with its UNet frozen."""
    from dreamsolo.models.loading import load_pipeline, write_model_info
    from dreamsolo.models.tiny import build_tiny
    from dreamsolo.training import adapters
    from dreamsolo.training.trainable import prepare_model

    base, lora = tmp_path / "base", tmp_path / "lora"
    build_tiny(base, 0)
    pipe = load_pipeline(base)
    cfg = _train(method="lora")
    adapters.add_lora(pipe.unet, cfg, cfg.lora_targets)
    lora.mkdir()
    adapters.save_lora(lora, {"unet": adapters.lora_state(pipe.unet, cfg)})
    write_model_info(lora, "lora", base, lora)
    fused = load_pipeline(lora)
    trainable = prepare_model(fused, dataclasses.replace(cfg, method="full"), torch.device("cpu"))
    assert sum(p.numel() for p in trainable.values()) == sum(p.numel() for p in fused.unet.parameters())


def test_activation_fit_and_prediction():
    sys.path.insert(0, str(REPO / "bench"))
    import _sizes

    pts = [{"precision": "bf16", "checkpointing": True, "rows": r, "bytes": 100 + 10 * r} for r in (1, 2)]
    assert _sizes.fit(pts, 1000)[("bf16", True)] == (100, 10)
    one = [{"precision": "bf16", "checkpointing": False, "rows": 1, "bytes": 2000 + 300},
           {"precision": "fp32", "checkpointing": False, "rows": 1, "bytes": 500}]
    fits = _sizes.fit(one, 1000)  # one row: a = the bf16 copy of the trained weights (2 B each), 0 in fp32
    assert fits[("bf16", False)] == (2000, 300) and fits[("fp32", False)] == (0, 500)
    sizes = {"trainable": 10, "total": 40, "frozen_low": 20, "frozen_fp32": 10}
    # weights 4*10 + 2*20 + 4*10, grads 4*10, AdamW 8*10, activations 100 + 10*3, context
    assert _sizes.predict(sizes, 2, "adamw", (100, 10), 3) == 40 + 40 + 40 + 40 + 80 + 130 + _sizes.CONTEXT_BYTES


@pytest.mark.e2e
def test_rehearsal_runs_end_to_end_on_tiny(tmp_path):
    md = tmp_path / "r.md"
    proc = subprocess.run([sys.executable, "bench/rehearsal.py", "--model", "tiny", "--md", str(md)],
                          cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = md.read_text()
    for stage in ("base", "generate_priors", "train_scene", "train_instance", "sample_base", "evaluate", "report"):
        assert f"| {stage}" in text
    assert "FAILED" not in text and "Predicted GPU memory" in text and "bf16 + ckpt + 8-bit Adam" in text


def test_text_encoder_checkpointing_uses_the_current_name():
    """transformers 5 deprecates gradient_checkpointing_enable (gone in v6): the rehearsal's Stage I warned."""
    import types
    import warnings

    from dreamsolo.models.build import build_modules
    from dreamsolo.training.trainable import prepare_model

    unet, vae, te = build_modules("tiny", 0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        prepare_model(types.SimpleNamespace(unet=unet, vae=vae, text_encoder=te),
                      _train(train_text_encoder=True, gradient_checkpointing=True), torch.device("cpu"))
    assert te.is_gradient_checkpointing


def test_a_probe_past_the_memory_limit_is_a_row_and_the_other_settings_still_predict(tmp_path):
    """SDXL at 1024 px on a 24 GiB box: the fp32 probe is killed past --max-rss-gb. That is the answer for
    that setting (it does not fit), not a crash: the table says so and the columns it feeds say n/a."""
    sys.path.insert(0, str(REPO / "bench"))
    import _sizes
    import rehearsal
    from studykit import make_study

    from dreamsolo.config import load_study

    root = make_study(tmp_path / "s", [rehearsal.PAIR], rehearsal.study_edits("tiny", 2))
    gone = {"rows": 1, "precision": "fp32", "checkpointing": False, "did_not_fit": True, "peak_rss": 17 * 2**30,
            "limit": 16 * 2**30, "forward_s": None, "bytes": None}
    kept = {"rows": 1, "precision": "bf16", "checkpointing": True, "bytes": 2**28, "forward_s": 0.1}
    assert "| fp32 | 1 | did not fit (killed past 16.00 GiB RSS) |" in rehearsal.probe_table([gone, kept])
    fits = _sizes.fit([kept], _sizes.counts("tiny")["unet"])
    rows = [r.split("|")[3:-1] for r in rehearsal.predict_table(load_study(root), "tiny", fits).splitlines()[2:]]
    assert len(rows) == 4
    for cells in rows:  # fp32, bf16, bf16 + 8-bit Adam: no probe; the two checkpointing columns: predicted
        assert [c.strip() for c in cells[:3]] == ["n/a"] * 3 and all(float(c) > 0 for c in cells[3:]), cells


def test_the_rehearsals_random_dino_file_is_reported_as_random(tmp_path):
    """The rehearsal loads DINO from a weights file (timm's real 224 px); the file says it is a random init,
    so the report calls DINO random. The same weights without that metadata count as pretrained."""
    from safetensors.torch import load_file, save_file

    sys.path.insert(0, str(REPO / "bench"))
    from rehearsal import random_dino

    from dreamsolo.metrics.dino import load_dino

    marked, plain = tmp_path / "random.safetensors", tmp_path / "plain.safetensors"
    random_dino(marked)
    save_file(load_file(marked), plain)
    name = "vit_small_patch16_224.dino"
    assert load_dino(name, str(marked)).pretrained is False
    assert load_dino(name, str(plain)).pretrained is True
    assert load_dino(name, str(marked)).model.patch_embed.img_size == (224, 224)
