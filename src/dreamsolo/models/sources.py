"""One code path for every base model: build (tiny), hub id + revision, local folder, single file.

The `base` stage materialises the preset as a diffusers folder under models/base/<preset>; every later
stage loads that folder (or a trained one) through `models.loading`, exactly like a hub model.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from dreamsolo.config import Preset
from dreamsolo.files import file_digest
from dreamsolo.models.loading import quiet, relative_names

SINGLE_FILE = (".safetensors", ".ckpt")


def _local(source: str, root: Path) -> Path:
    """A local source: `~` expanded, relative paths anchored at the study root."""
    path = Path(source).expanduser()
    return path if path.is_absolute() else root / path


def source_kind(source: str, root: Path) -> str:
    """build | file | folder | hub. A path that looks local but does not exist is an error, not a hub id."""
    from dreamsolo.models.build import arch_of, check_arch

    arch = arch_of(source)
    if arch is not None:
        check_arch(arch, f"presets: source {source}")
        return "build"
    path = _local(source, root)
    if path.suffix in SINGLE_FILE:
        if path.suffix != ".safetensors":
            raise ValueError(f"presets: {source} is a pickled checkpoint; only .safetensors single files are "
                             "loaded (nothing is unpickled): convert it to .safetensors first")
        if not path.is_file():
            raise FileNotFoundError(f"presets: single-file checkpoint {source} not found ({path})")
        return "file"
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"presets: {source} is a folder but not a diffusers model (no model_index.json)")
        return "folder"
    if source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise FileNotFoundError(f"presets: {source} is neither an existing folder/file nor a hub id (owner/name)")
    return "hub"


LDM_PARTS = {"model.diffusion_model.": "UNet", "first_stage_model.": "VAE", "cond_stage_model.": "text encoder"}
# SDXL's original layout (sgm): both text encoders under `conditioner.embedders.0.` / `.1.` (as diffusers'
# single-file loader tells the two families apart)
XL_PARTS = {"model.diffusion_model.": "UNet", "first_stage_model.": "VAE", "conditioner.embedders.1.": "text encoders"}


def _check_single_file(path: Path, source: str) -> str:
    """An original-layout SD or SDXL checkpoint holds all its models; say which part is missing (header only).
    Returns the family's pipeline class name."""
    from safetensors import safe_open

    from dreamsolo.models.family import SD, XL

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001 - safetensors raises several error types for a bad header
        raise ValueError(f"presets: {source} is not a readable .safetensors file ({e})") from e
    if any(k.startswith("conditioner.embedders.") for k in keys):
        missing = [name for prefix, name in XL_PARTS.items() if not any(k.startswith(prefix) for k in keys)]
        if missing:
            raise ValueError(f"presets: {source} is not an SDXL single-file checkpoint in the original layout: no "
                             f"{', '.join(missing)} weights ({', '.join(XL_PARTS)} keys expected)")
        return XL
    missing = [name for prefix, name in LDM_PARTS.items() if not any(k.startswith(prefix) for k in keys)]
    if missing:
        raise ValueError(f"presets: {source} is not a Stable Diffusion single-file checkpoint in the original "
                         f"layout: no {', '.join(missing)} weights ({', '.join(LDM_PARTS)} keys expected)")
    return SD


def _config_source(config: str, root: Path) -> tuple[str, bool]:
    """(value for from_single_file's `config`, whether it is a local folder)."""
    path = _local(config, root)
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"presets: config {config} is a folder but not a diffusers model (no model_index.json)")
        return str(path), True
    if config.startswith((".", "/", "~")) or config.count("/") != 1 or path.suffix in SINGLE_FILE:
        raise FileNotFoundError(f"presets: config {config} is neither an existing diffusers folder nor a hub id")
    return config, False


def _single_file(preset: Preset, root: Path):
    """A single-file (original SD layout) checkpoint; the architecture comes from `preset.config`.

    A local config folder is read offline (`local_files_only`); a hub id (or null, which lets diffusers
    guess the hub model from the file's keys) downloads only the small config files.
    """
    from dreamsolo.models.family import load_kwargs, pipeline_class

    file = _local(preset.source, root)
    name = _check_single_file(file, preset.source)  # SD or SDXL, by the checkpoint's keys
    cls = pipeline_class(name)
    kw = dict(torch_dtype=torch.float32, **load_kwargs(name))
    if preset.config is not None:
        config, local = _config_source(preset.config, root)
        kw |= dict(config=config, local_files_only=local) | ({} if local else dict(revision=preset.revision))
        return cls.from_single_file(str(file), **kw)
    try:
        return cls.from_single_file(str(file), **kw)
    except Exception as e:  # noqa: BLE001 - offline, the hub fetch fails in many ways; say what to do
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ValueError(
            f"presets: could not get the architecture of single file {preset.source} from the hub "
            f"({type(e).__name__}: {first}); set the preset's `config` to a local diffusers folder of the "
            "same architecture (tools/to_single_file.py --config-out writes one) or a reachable hub id"
        ) from e


def materialise_base(preset: Preset, dest: Path, root: Path, where: str = "presets") -> dict:
    """Write the preset's pipeline to `dest` (a fresh folder) and return what was resolved.

    `where` (`presets.<name>`) names the preset in the one-line error for a hub model that cannot be had."""
    from dreamsolo.models.build import arch_of, build
    from dreamsolo.models.hub import hub_errors

    quiet()
    kind = source_kind(preset.source, root)
    info: dict = {"source": preset.source, "kind": kind, "revision": preset.revision}
    if kind == "build":
        build(dest, arch_of(preset.source), preset.seed)  # tiny, or a real architecture with random weights
        return info
    from dreamsolo.models.family import folder_pipeline, load_kwargs, pipeline_class

    if kind == "file":
        pipe = _single_file(preset, root)
        info |= {"config": preset.config, "sha256": file_digest(_local(preset.source, root))}  # not a DVC dep
    elif kind == "folder":
        name = folder_pipeline(_local(preset.source, root))
        pipe = pipeline_class(name).from_pretrained(_local(preset.source, root), use_safetensors=True,
                                                    **load_kwargs(name))
    else:
        name = _hub_pipeline(preset)
        with hub_errors(preset.source, preset.revision, where):  # offline / no such repo: one line, not a traceback
            pipe = pipeline_class(name).from_pretrained(preset.source, revision=preset.revision,
                                                        use_safetensors=True, **load_kwargs(name))
        info["resolved_revision"] = pipe.config.get("_commit_hash") or _hub_commit(preset)
    pipe.save_pretrained(dest, safe_serialization=True)
    relative_names(dest, dest)  # a local folder's absolute path: not part of the model
    return info


def _hub_pipeline(preset: Preset) -> str:
    """The pipeline class the hub model's model_index.json names (SD or SDXL). When it cannot be read (offline,
    no such repo), StableDiffusionPipeline: its own from_pretrained then fails with the error worth reporting."""
    from dreamsolo.models.family import PIPELINES, SD

    try:
        from huggingface_hub import hf_hub_download

        index = hf_hub_download(preset.source, "model_index.json", revision=preset.revision)
        name = json.loads(Path(index).read_text())["_class_name"]
    except Exception:  # noqa: BLE001 - reported by the load that follows
        return SD
    return name if name in PIPELINES else SD  # another class: the SD load says what is wrong with it


def _hub_commit(preset: Preset) -> str | None:
    try:
        from huggingface_hub import model_info

        return model_info(preset.source, revision=preset.revision).sha
    except Exception:  # the weights are already here; the revision is a nice-to-have
        return None


def write_info(dest: Path, info: dict) -> None:
    (dest / "dreamsolo_base.json").write_text(json.dumps(info, indent=2) + "\n")
