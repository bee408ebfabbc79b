"""Single-file checkpoints (issue 6): tools/to_single_file.py writes the original SD layout, and a preset
whose `source` is such a file loads through `materialise_base` into the very same model."""

from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from studykit import REPO, make_study


def _tool():
    spec = importlib.util.spec_from_file_location("to_single_file", REPO / "tools/to_single_file.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The tiny model, its single file + weight-free architecture folder inside a study, and that study."""
    from dreamsolo.models.tiny import build_tiny

    tmp = tmp_path_factory.mktemp("single")
    build_tiny(tmp / "orig", seed=0)
    root = make_study(tmp / "study", ["cat_grass"], {
        "presets.community": {"source": "checkpoints/tiny-ldm.safetensors", "config": "checkpoints/arch",
                              "resolution": 64, "train_steps": 4},
        "model.preset": "community",
    })
    _tool().convert(tmp / "orig", root / "checkpoints/tiny-ldm.safetensors", config_out=root / "checkpoints/arch")
    return tmp / "orig", root


def test_file_is_original_layout_and_holds_no_diffusers_keys(converted):
    from safetensors import safe_open

    _, root = converted
    with safe_open(str(root / "checkpoints/tiny-ldm.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    prefixes = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.transformer.text_model.")
    assert all(k.startswith(prefixes) for k in keys)
    assert all(any(k.startswith(p) for k in keys) for p in prefixes)
    assert "model.diffusion_model.input_blocks.0.0.weight" in keys  # conv_in
    assert "first_stage_model.encoder.mid.attn_1.q.weight" in keys
    assert not list((root / "checkpoints/arch").rglob("*.safetensors")), "the config folder must hold no weights"


def test_single_file_preset_loads_the_same_model(converted, tmp_path):
    """Same code path as users: params.yaml preset -> load_study -> materialise_base -> load_pipeline."""
    from dreamsolo.config import load_study
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.models.sources import materialise_base

    orig_dir, root = converted
    study = load_study(root)
    assert study.preset.config == "checkpoints/arch"
    info = materialise_base(study.preset, tmp_path / "base", root)
    assert info["kind"] == "file" and len(info["sha256"]) == 64
    mine, ref = load_pipeline(tmp_path / "base"), load_pipeline(orig_dir)
    for part in ("unet", "vae", "text_encoder"):
        a, b = getattr(mine, part).state_dict(), getattr(ref, part).state_dict()
        assert set(a) == set(b), part
        assert all(torch.equal(a[k], b[k]) for k in b), f"{part} weights differ after the round trip"
    assert mine.scheduler.config == ref.scheduler.config
    ids = ref.tokenizer(["a photo of sks cat in olis grass field"], padding="max_length", max_length=77,
                        return_tensors="pt").input_ids
    assert torch.equal(mine.tokenizer(["a photo of sks cat in olis grass field"], padding="max_length",
                                      max_length=77, return_tensors="pt").input_ids, ids)
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 3, 64, 64, generator=gen) * 2 - 1
    latents, t = torch.randn(2, 4, 32, 32, generator=gen), torch.tensor([10, 700])
    with torch.no_grad():
        outs = []
        for pipe in (mine, ref):
            text = pipe.text_encoder(ids)[0]
            eps = pipe.unet(latents, t, encoder_hidden_states=text.expand(2, -1, -1)).sample
            post = pipe.vae.encode(image).latent_dist
            outs.append((text, eps, post.mean, post.std, pipe.vae.decode(latents[:1]).sample))
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_missing_file_and_non_model_folder_are_clear_errors(converted, tmp_path):
    from dreamsolo.config import Preset
    from dreamsolo.models.sources import materialise_base

    orig_dir, root = converted
    with pytest.raises(FileNotFoundError, match="single-file checkpoint checkpoints/nope.safetensors not found"):
        materialise_base(Preset(source="checkpoints/nope.safetensors", config="checkpoints/arch"), tmp_path / "a", root)
    (root / "checkpoints/not_a_model").mkdir()
    with pytest.raises(ValueError, match="not a diffusers model"):
        materialise_base(Preset(source="checkpoints/not_a_model"), tmp_path / "b", root)
    with pytest.raises(ValueError, match="config checkpoints/not_a_model is a folder but not a diffusers model"):
        materialise_base(Preset(source="checkpoints/tiny-ldm.safetensors", config="checkpoints/not_a_model"),
                         tmp_path / "c", root)
    # a diffusers component file is not a whole original-layout checkpoint
    shutil.copy(orig_dir / "unet/diffusion_pytorch_model.safetensors", root / "checkpoints/unet.safetensors")
    with pytest.raises(ValueError, match="no UNet, VAE, text encoder weights"):
        materialise_base(Preset(source="checkpoints/unet.safetensors", config="checkpoints/arch"), tmp_path / "d", root)


def test_params_refuse_pickles_and_a_stray_config():
    from dreamsolo.config import ParamsError, Preset, build

    with pytest.raises(ParamsError, match=r"presets.x.source: .*pickled .ckpt"):
        build(Preset, {"source": "models/x.ckpt"}, "presets.x")
    with pytest.raises(ParamsError, match=r"presets.x.config: only used when `source` is a single-file"):
        build(Preset, {"source": "build", "config": "some/folder"}, "presets.x")


def test_tool_refuses_a_folder_that_is_not_a_model(tmp_path, capsys):
    tool = _tool()
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as e:
        tool.main([str(tmp_path / "empty"), str(tmp_path / "x.safetensors")])
    assert e.value.code == 1
    assert "not a diffusers model folder" in capsys.readouterr().err
    assert not (tmp_path / "x.safetensors").exists()


def test_sd15_layout_on_meta_tensors():
    """SD 1.5's real architecture (no weights: meta tensors): the keys diffusers recognises as v1."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import infer_diffusers_model_type
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(
            sample_size=64, block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, cross_attention_dim=768,
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",), attention_head_dim=8,
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, sample_size=512)
        te = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12))
    ldm = _tool().to_ldm(unet, vae, te)  # raises unless diffusers' converters map it back exactly
    assert infer_diffusers_model_type(ldm) == "v1"
    assert len(ldm) == sum(len(m.state_dict()) for m in (unet, vae, te))
    shapes = {
        "model.diffusion_model.input_blocks.3.0.op.weight": (320, 320, 3, 3),
        "model.diffusion_model.input_blocks.4.0.skip_connection.weight": (640, 320, 1, 1),
        "model.diffusion_model.middle_block.1.proj_in.weight": (1280, 1280, 1, 1),
        "model.diffusion_model.output_blocks.2.1.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.5.2.conv.weight": (1280, 1280, 3, 3),
        "model.diffusion_model.output_blocks.11.1.transformer_blocks.0.attn2.to_k.weight": (320, 768),
        "first_stage_model.encoder.mid.attn_1.q.weight": (512, 512, 1, 1),
        "first_stage_model.decoder.up.0.block.0.nin_shortcut.weight": (128, 256, 1, 1),
        "cond_stage_model.transformer.text_model.final_layer_norm.weight": (768,),
    }
    for key, shape in shapes.items():
        assert tuple(ldm[key].shape) == shape, key
