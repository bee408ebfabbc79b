"""SDXL as a model family (issue 27, point 2), on `tiny-sdxl`: SDXL's component types at toy size, built locally.

What is checked, and what each check would catch:
- the build: SDXL's pipeline and component classes; the real `sdxl` architecture's published sizes (meta device);
- the conditioning: both encoders' penultimate hidden states concatenated and text_encoder_2's pooled output,
  equal to what StableDiffusionXLPipeline.encode_prompt makes of the same prompts; the size / crop time_ids of
  each row (a photo's from its prepare record, a prior's as the pipeline draws it); and that the UNet of a
  training step is called with exactly those (hidden states, text_embeds, time_ids) for every row;
- both stages (Stage I LoRA with both text encoders, Stage II LoRA with scene replay, full fine-tuning), the
  LoRA file read back by plain diffusers (StableDiffusionXLPipeline.load_lora_weights) to the same UNet
  output as our fused load, a resume to bit-identical adapters, priors, samples and `dreamsolo sample`.
"""

from __future__ import annotations

import dataclasses
import json
import pytest
import torch

from studykit import make_study, run, run_chain, torch_threads

PAIR = "cat_grass"
RES = 64
EDITS = {"model.preset": "tiny-sdxl", "presets.tiny-sdxl.train_steps": 2, "train.log_every": 1,
         "priors.num_images": 2, "priors.steps": 2, "priors.batch_size": 2,
         "sample.num_images": 1, "sample.steps": 2}


@pytest.fixture(scope="module")
def xl(tmp_path_factory):
    """A one-pair tiny-sdxl study through base, prepare and both classes' priors (in-process), one thread."""
    from dreamsolo.config import load_study

    root = make_study(tmp_path_factory.mktemp("sdxl") / "study", [PAIR], EDITS)
    with torch_threads(1), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{root.parent}/mlflow.db")
        mp.chdir(root.parent)  # MLflow's ./mlruns lands beside the study
        study = load_study(root)
        run_chain(study, PAIR, through="generate_priors")
        yield study


@pytest.fixture(scope="module")
def trained(xl):
    """Stage I: LoRA on the UNet and both text encoders; Stage II: LoRA, text encoders frozen, scene replay."""
    from dreamsolo.config import load_study
    from dreamsolo.stages import train
    from studykit import edit_params

    edit_params(xl.root, {f"pairs.{PAIR}.train_scene": {"train_text_encoder": True},
                          f"pairs.{PAIR}.train_instance": {"replay_weight": 0.5}})
    study = load_study(xl.root)
    with torch_threads(1), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{xl.root.parent}/mlflow.db")
        mp.chdir(xl.root.parent)
        summaries = {s: train.run(study, PAIR, s) for s in ("train_scene", "train_instance")}
        yield study, summaries


def _base(study):
    from dreamsolo.layout import base_dir

    return base_dir(study.root, study.preset_name)


def test_tiny_sdxl_is_sdxl_at_toy_size(xl):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    from dreamsolo.models.family import is_xl
    from dreamsolo.models.loading import load_pipeline

    pipe = load_pipeline(_base(xl))
    assert type(pipe).__name__ == "StableDiffusionXLPipeline" and is_xl(pipe)
    assert type(pipe.text_encoder) is CLIPTextModel and type(pipe.text_encoder_2) is CLIPTextModelWithProjection
    assert pipe.unet.config.cross_attention_dim == pipe.text_encoder.config.hidden_size + \
        pipe.text_encoder_2.config.hidden_size
    assert pipe.tokenizer_2.pad_token == "!" and pipe.tokenizer.pad_token == "<|endoftext|>"
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler" and pipe.vae.config.force_upcast
    assert json.loads((_base(xl) / "model_index.json").read_text())["force_zeros_for_empty_prompt"] is True


def test_sdxl_architecture_has_the_published_sizes():
    """The real-size build the rehearsal will use (meta device: sizes only)."""
    from dreamsolo.models.build import arch_config, build_modules, build_text_encoder_2

    unet, vae, te = build_modules("sdxl", 0, "meta")
    te2 = build_text_encoder_2("sdxl", "meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(unet) == 2_567_463_684  # SDXL base's UNet
    assert count(te) == 123_060_480 and count(te2) == 694_659_840  # CLIP ViT-L/14 text, OpenCLIP ViT-bigG/14 text
    assert count(vae) == 83_653_863
    assert arch_config("sdxl")["resolution"] == 1024


def _cached(study, stage="train_scene"):
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.stages.train import stage_inputs
    from dreamsolo.training.inputs import cache_inputs

    pipe = load_pipeline(_base(study))
    inp = stage_inputs(study, PAIR, stage)
    return pipe, inp, cache_inputs(pipe, inp, torch.device("cpu"))


def test_conditioning_is_what_the_sdxl_pipeline_makes_of_the_prompts(xl):
    """Hidden states and pooled embeddings as diffusers' StableDiffusionXLPipeline.encode_prompt, row by row;
    a wrong layer, a missing encoder or the wrong pooled output fails here."""
    from dreamsolo.models.family import XLCond

    pipe, inp, cached = _cached(xl)
    assert isinstance(cached.text, XLCond) and cached.ids.shape == (2, 2, 77)
    with torch.no_grad():
        hidden, _, pooled, _ = pipe.encode_prompt([inp.prompt, inp.prior_prompt], device=torch.device("cpu"),
                                                  num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert cached.text.hidden.shape == (2, 77, 64) and cached.text.pooled.shape == (2, 32)
    torch.testing.assert_close(cached.text.hidden, hidden.float(), rtol=0, atol=0)
    torch.testing.assert_close(cached.text.pooled, pooled.float(), rtol=0, atol=0)


def test_time_ids_are_the_photo_size_and_crop_and_the_priors_whole_image(xl):
    """Row 0, the scene photo: its size before cropping (h, w), the crop's top-left in resized pixels and the
    target size (diffusers' compute_time_ids); row 1, a prior: what the pipeline itself passes when it draws one."""
    pipe, inp, cached = _cached(xl, "train_instance")  # the instance photo: not square, so a real crop offset
    meta = json.loads((inp.image.parent / "meta.json").read_text())["instance"]
    w, h = meta["input_size"]
    left, top, right, _ = meta["crop_box"]
    side = right - left
    assert w != h, "the test needs a photo that is cropped"
    expected = [h, w, round(top * RES / side), round(left * RES / side), RES, RES]
    assert cached.text.time_ids[0].tolist() == expected
    prior = pipe._get_add_time_ids((RES, RES), (0, 0), (RES, RES), torch.float32,
                                   text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
    assert cached.text.time_ids[1].tolist() == prior[0].tolist()
    assert cached.text.time_ids.shape == (3, 6)  # instance, prior, replay (the scene photo: square, no offset)


def test_time_ids_of_a_padded_photo_and_of_a_photo_without_a_record(tmp_path):
    """prepare.crop none pads (nothing cropped: offset 0); no meta.json: the photo as it now is."""
    from dreamsolo.models.family import photo_time_ids, pipeline_class

    photo = tmp_path / "instance.png"
    assert photo_time_ids(photo, 64) == [64, 64, 0, 0, 64, 64]
    (tmp_path / "meta.json").write_text(json.dumps({"instance": {"input_size": [300, 200], "crop_box": None}}))
    assert photo_time_ids(photo, 64) == [200, 300, 0, 0, 64, 64]
    (tmp_path / "meta.json").write_text(json.dumps({"instance": {"input_size": [300, 200],
                                                                 "crop_box": [50, 0, 250, 200]}}))
    assert photo_time_ids(photo, 64) == [200, 300, 0, 16, 64, 64]  # 50 px of 200 -> 16 of 64
    with pytest.raises(ValueError, match="StableDiffusionXLImg2ImgPipeline"):
        pipeline_class("StableDiffusionXLImg2ImgPipeline")  # a refiner or img2img folder is refused, not guessed


def test_a_training_step_gives_the_unet_every_rows_conditioning(xl):
    """The UNet call of one step, per block of the batch [instance | prior | replay]: the cached rows' hidden
    states, text_embeds and time_ids (dropping or zeroing time_ids, or mixing up rows, fails here)."""
    from dreamsolo.stages.train import stage_inputs
    from dreamsolo.training import loop

    cfg = dataclasses.replace(xl.train(PAIR, "train_instance"), replay_weight=0.5, batch_size=2)
    inp = stage_inputs(xl, PAIR, "train_instance")  # with the scene replayed (train_instance's default),
    assert inp.replay_image is not None
    inp = dataclasses.replace(inp, init_dir=_base(xl))  # from the base: Stage I is not trained yet
    with torch_threads(1):
        s = loop.setup(inp, cfg)
        seen = []
        s.pipe.unet.register_forward_pre_hook(lambda _m, args, kw: seen.append((args, kw)), with_kwargs=True)
        sums = loop.train_step(s, cfg, 1)
    assert torch.isfinite(torch.tensor(sums["loss"]))
    (args, kw), = seen
    assert args[0].shape == (6, 4, RES // 2, RES // 2)  # 3 blocks x batch 2; tiny's VAE halves the side
    added = kw["added_cond_kwargs"]
    want = s.cached.text
    for block in range(3):
        rows = slice(2 * block, 2 * block + 2)
        torch.testing.assert_close(kw["encoder_hidden_states"][rows], want.hidden[block].expand(2, -1, -1))
        torch.testing.assert_close(added["text_embeds"][rows], want.pooled[block].expand(2, -1))
        torch.testing.assert_close(added["time_ids"][rows], want.time_ids[block].expand(2, -1))
    assert want.time_ids[0].tolist() != want.time_ids[1].tolist()  # the photo's and the prior's differ


def test_both_stages_write_lora_that_plain_diffusers_loads(trained):
    """Stage II's file ([scene | instance] adapters, both text encoders' from Stage I) through
    StableDiffusionXLPipeline.from_pretrained(base) + load_lora_weights gives the UNet output of our fused load."""
    from diffusers import StableDiffusionXLPipeline
    from safetensors.torch import load_file

    from dreamsolo.layout import model_dir
    from dreamsolo.models.loading import LORA_FILE, load_pipeline, read_info

    study, summaries = trained
    assert [summaries[s]["steps"] for s in summaries] == [2, 2]
    folder = model_dir(study.root, PAIR, "train_instance")
    assert read_info(folder)["method"] == "lora"
    keys = load_file(folder / LORA_FILE).keys()
    assert {k.split(".")[0] for k in keys} == {"unet", "text_encoder", "text_encoder_2"}
    assert "loss_replay" in (folder / "train_log.csv").read_text().splitlines()[0]

    ours = load_pipeline(folder)
    plain = StableDiffusionXLPipeline.from_pretrained(_base(study), add_watermarker=False)
    base_out = _unet_probe(plain)
    plain.load_lora_weights(folder, weight_name=LORA_FILE)
    torch.testing.assert_close(_unet_probe(plain), _unet_probe(ours), rtol=1e-4, atol=1e-5)
    assert not torch.equal(base_out, _unet_probe(ours))  # the adapter changed the model
    for name in ("text_encoder", "text_encoder_2"):  # Stage I trained both encoders' adapters: loaded and fused
        base_te = getattr(StableDiffusionXLPipeline.from_pretrained(_base(study), add_watermarker=False), name)
        assert any(not torch.equal(a, b) for a, b in zip(base_te.parameters(), getattr(ours, name).parameters()))


def _unet_probe(pipe) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, RES // 2, RES // 2, generator=gen)
    cond = {"encoder_hidden_states": torch.randn(1, 77, 64, generator=gen),
            "added_cond_kwargs": {"text_embeds": torch.randn(1, 32, generator=gen),
                                  "time_ids": torch.tensor([[RES, RES, 0, 0, RES, RES]], dtype=torch.float32)}}
    with torch.no_grad():
        return pipe.unet(x, torch.tensor([500]), **cond).sample


def test_samples_and_adhoc_sampling_go_through_the_sdxl_pipeline(trained, tmp_path):
    from PIL import Image

    from dreamsolo.layout import priors_dir
    from dreamsolo.sample_command import adhoc
    from dreamsolo.stages import sample
    from safetensors.torch import load_file

    study, _ = trained
    cls = study.pair(PAIR).scene_class
    lat = load_file(priors_dir(study.root, cls) / "latents.safetensors")
    assert lat["mean"].shape == (2, 4, RES // 2, RES // 2)
    assert Image.open(priors_dir(study.root, cls) / "0000.png").size == (RES, RES)
    with torch_threads(1), pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{study.root.parent}/mlflow.db")
        mp.chdir(study.root.parent)
        out = sample.run(study, PAIR)
        paths = adhoc(study, PAIR, "a photo of <S> cat", n=1, seed=3, out=str(tmp_path / "adhoc"))
    pngs = sorted(out.glob("0*.png"))
    assert pngs and all(Image.open(p).size == (RES, RES) for p in pngs)
    assert len(paths) == 1 and Image.open(paths[0]).size == (RES, RES)
    assert json.loads((out / "sampling.json").read_text())["resolution"] == RES


def test_full_fine_tuning_with_both_text_encoders_saves_an_sdxl_pipeline(xl, tmp_path):
    from dreamsolo.models.family import folder_pipeline
    from dreamsolo.models.loading import load_pipeline, read_info
    from dreamsolo.stages.train import stage_inputs
    from dreamsolo.training.loop import train_stage

    cfg = dataclasses.replace(xl.train(PAIR, "train_scene"), method="full", train_text_encoder=True, steps=1,
                              warmup_steps=0)  # warmup would make the one step's lr 0
    inp = dataclasses.replace(stage_inputs(xl, PAIR, "train_scene"), out_dir=tmp_path / "full",
                              ckpt_dir=tmp_path / "ckpt")
    with torch_threads(1):
        train_stage(inp, cfg)
    assert read_info(tmp_path / "full")["method"] == "full"
    assert folder_pipeline(tmp_path / "full") == "StableDiffusionXLPipeline"
    base, ours = load_pipeline(_base(xl)), load_pipeline(tmp_path / "full")
    for name in ("unet", "text_encoder", "text_encoder_2"):
        changed = [not torch.equal(a, b) for a, b in zip(getattr(base, name).parameters(),
                                                         getattr(ours, name).parameters())]
        assert any(changed), f"{name} did not train"


def test_an_interrupted_sdxl_stage_resumes_to_the_same_adapters(xl, tmp_path, monkeypatch):
    """Killed after step 3 with a checkpoint at step 2 (adapters of the UNet and both text encoders, optimizer,
    generator): the rerun resumes there and writes the same file, byte for byte, as an uninterrupted run."""
    from dreamsolo.models.loading import LORA_FILE
    from dreamsolo.stages.train import stage_inputs
    from dreamsolo.training import loop

    cfg = dataclasses.replace(xl.train(PAIR, "train_scene"), train_text_encoder=True, steps=4, checkpoint_every=2)
    inp = stage_inputs(xl, PAIR, "train_scene")
    whole = dataclasses.replace(inp, out_dir=tmp_path / "whole", ckpt_dir=tmp_path / "ckpt-whole")
    cut = dataclasses.replace(inp, out_dir=tmp_path / "cut", ckpt_dir=tmp_path / "ckpt-cut")
    real = loop.train_step

    def dies_at_3(s, c, step):
        if step == 3:
            raise KeyboardInterrupt("killed")
        return real(s, c, step)

    with torch_threads(1):
        loop.train_stage(whole, cfg)
        monkeypatch.setattr(loop, "train_step", dies_at_3)
        with pytest.raises(KeyboardInterrupt):
            loop.train_stage(cut, cfg)
        monkeypatch.setattr(loop, "train_step", real)
        assert sorted(p.name for p in cut.ckpt_dir.glob("step-*")) == ["step-0000002"]
        summary = loop.train_stage(cut, cfg)
    assert summary["resumed_from"] == 2
    assert (whole.out_dir / LORA_FILE).read_bytes() == (cut.out_dir / LORA_FILE).read_bytes()
    assert (whole.out_dir / "train_log.csv").read_text() == (cut.out_dir / "train_log.csv").read_text()


@pytest.mark.e2e
def test_dvc_repro_of_a_tiny_sdxl_study(tmp_path):
    """The whole chain of one pair as DVC runs it (stage scripts, own processes), then nothing left to run."""
    from studykit import ran

    root = make_study(tmp_path / "study", [PAIR], EDITS, git=True)
    out = run(["dvc", "repro"], root, timeout=1800)
    assert {f"train_instance@{PAIR}", f"sample@{PAIR}", f"evaluate@{PAIR}", "report"} <= ran(out.stdout)
    assert json.loads((root / "models/base/tiny-sdxl/model_index.json").read_text())["_class_name"] == \
        "StableDiffusionXLPipeline"
    assert (root / f"reports/pairs/{PAIR}.json").is_file()
    again = run(["dvc", "repro"], root)
    assert not ran(again.stdout)
    status = run(["dvc", "status"], root)
    assert "up to date" in status.stdout.lower() or not status.stdout.strip()
