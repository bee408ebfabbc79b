"""Stage I / Stage II weights in MLflow, through the `tracking.Run` handle (no mlflow import here).

Adapter-sized weights (LoRA / PEFT adapter files) are always logged in full as artifacts: they are
small and are the result. Full-model weights are logged as the `mode` setting says:

- `reference`: nothing big is copied. The run gets the DVC path of the weights folder and the md5 of
  every weights file as tags (`weights.dvc_path`, `weights.md5`, `weights.md5.<file>`), plus a
  `weights_manifest.json` artifact (path, md5, size of each file). The md5 is the one DVC itself
  uses, so `.dvc/cache/files/md5/<md5[:2]>/<md5[2:]>` is the file in the DVC cache, and `dvc.lock`
  names the folder that holds it.
- `artifact`: the whole folder (a loadable diffusers pipeline) is logged under `weights/`, and the
  manifest and tags are written as well.
"""

from __future__ import annotations

import json
from pathlib import Path

from dreamsolo.files import file_digest
from dreamsolo.layout import MODEL_INFO

MODES = ("reference", "artifact")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt")
ADAPTER_MARKERS = ("lora", "adapter")
"""A weights file whose name contains one of these is adapter-sized and always logged in full."""
MAIN = "unet/diffusion_pytorch_model.safetensors"
"""The file whose md5 is the run's `weights.md5` tag (what fine-tuning changes); else the first file."""


def weight_files(folder: Path) -> list[Path]:
    """Every weights file under `folder`, sorted (relative order is stable across runs)."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def is_adapter(path: Path) -> bool:
    return any(marker in path.name.lower() for marker in ADAPTER_MARKERS)


def weights_manifest(root: Path, folder: Path) -> dict:
    """{'dvc_path', 'files': [{'path', 'md5', 'size', 'adapter'}]} of a weights folder (paths relative
    to the study root / the folder, POSIX); for a LoRA folder also 'method' and 'base_dvc_path'."""
    files = [{"path": p.relative_to(folder).as_posix(), "md5": file_digest(p, "md5"), "size": p.stat().st_size,
              "adapter": is_adapter(p)} for p in weight_files(folder)]
    out = {"dvc_path": folder.relative_to(root).as_posix(), "files": files}
    info = folder / MODEL_INFO
    if info.is_file():  # a LoRA folder names the weights it applies to: needed to use the adapter
        data = json.loads(info.read_text())
        out["method"] = data.get("method")
        if data.get("base"):
            base = (folder / data["base"]).resolve()
            out["base_dvc_path"] = base.relative_to(root.resolve()).as_posix() \
                if base.is_relative_to(root.resolve()) else str(base)
    return out


def log_weights(run, root: Path, folder: Path, mode: str = "reference") -> dict:
    """Log the weights in `folder` (a stage's output under the study `root`) to `run` as `mode` says;
    returns the manifest. Call it inside the stage's `tracking.stage_run` block, after the weights are
    written."""
    if mode not in MODES:
        raise ValueError(f"log_weights: mode {mode!r} is not one of: {', '.join(MODES)}")
    if not folder.is_dir():
        raise FileNotFoundError(f"log_weights: {folder} is not a folder")
    manifest = weights_manifest(root, folder)
    files = manifest["files"]
    if not files:
        raise FileNotFoundError(f"log_weights: no weights files in {manifest['dvc_path']}")
    adapters = [f for f in files if f["adapter"]]
    full = [f for f in files if not f["adapter"]]
    for f in adapters:  # small: always in full
        run.artifact(folder / f["path"], _parent("adapter", f["path"]))
    if full and mode == "artifact":
        run.artifact(folder, "weights")
    main = next((f for f in files if f["path"] == MAIN), adapters[0] if adapters else files[0])
    tags = {"weights.mode": mode, "weights.dvc_path": manifest["dvc_path"], "weights.md5": main["md5"],
            "weights.file": main["path"], "weights.bytes": str(sum(f["size"] for f in files))}
    tags.update({f"weights.md5.{f['path']}": f["md5"] for f in files})
    if manifest.get("base_dvc_path"):
        tags["weights.base_dvc_path"] = manifest["base_dvc_path"]
    run.tags(tags)
    run.dict({**manifest, "mode": mode}, "weights_manifest.json")
    return manifest


def _parent(prefix: str, rel: str) -> str:
    parent = Path(rel).parent.as_posix()
    return prefix if parent == "." else f"{prefix}/{parent}"
