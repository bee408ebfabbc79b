"""params.yaml is read as DVC reads it (YAML 1.2, ruamel.yaml), compared with DVC's own loader.

PyYAML (YAML 1.1) reads several spellings differently; for each, the stage must see what DVC tracks.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from dvc.utils.serialize import LOADERS, YAMLError as DvcYAMLError

from studykit import REPO, edit_params, env, make_study

from dreamsolo.config import ParamsError, load_study
from dreamsolo.params import dump_yaml, read_yaml

DVC_LOAD = LOADERS[".yaml"]  # what dvc.dependency.param reads params.yaml with

# value as written -> (what YAML 1.2 / DVC reads, what PyYAML / YAML 1.1 reads)
SPELLINGS: dict[str, tuple[Any, Any]] = {
    "1e-5": (1e-5, "1e-5"),  # 1.1 floats need a dot and a signed exponent
    "1E+5": (1e5, "1E+5"),
    "1.0e5": (1e5, "1.0e5"),
    "1.0e-5": (1e-5, 1e-5),  # the spelling params.yaml uses: the same in both
    "yes": ("yes", True),
    "no": ("no", False),
    "on": ("on", True),
    "off": ("off", False),
    '"no"': ("no", "no"),  # quoted text stays text in both
    "010": (10, 8),  # 1.1 octal
    "0o10": (8, "0o10"),  # 1.2 octal
    "1:20": ("1:20", 80),  # 1.1 sexagesimal
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("written", SPELLINGS, ids=SPELLINGS)
def test_the_stage_reads_each_spelling_as_dvc_does(tmp_path, written):
    yaml12, yaml11 = SPELLINGS[written]
    path = _write(tmp_path, f"x: {written}\n")
    ours, dvcs = read_yaml(path)["x"], DVC_LOAD(str(path))["x"]
    assert (ours, type(ours)) == (dvcs, type(dvcs)) == (yaml12, type(yaml12))
    assert yaml.safe_load(path.read_text())["x"] == yaml11  # why it matters: PyYAML's reading


def _params_with(tmp_path: Path, key_line: str, value: str) -> Path:
    """The real params.yaml with the first line starting `key_line` set to `value` (text edit, comment kept)."""
    text = (REPO / "params.yaml").read_text()
    text, n = re.subn(rf"^({re.escape(key_line)}) *[^#\n]*", rf"\g<1> {value}  ", text, count=1, flags=re.M)
    assert n == 1, key_line
    # on `tiny`, whose preset layer sets no training key (toy's own lr would mask train_scene.defaults.lr)
    text, n = re.subn(r"^(  preset:) *toy\b", r"\g<1> tiny", text, count=1, flags=re.M)
    assert n == 1
    (tmp_path / "params.yaml").write_text(text)
    return tmp_path


def test_unquoted_1e_5_is_a_float_for_the_stage(tmp_path):
    """PyYAML read `lr: 1e-5` as the string '1e-5' and the stage refused what DVC took as a float."""
    root = _params_with(tmp_path, "    lr:", "1e-5")  # train_scene.defaults.lr
    assert DVC_LOAD(str(root / "params.yaml"))["train_scene"]["defaults"]["lr"] == 1e-5
    assert load_study(root).train("cat_grass", "train_scene").lr == 1e-5


@pytest.mark.parametrize("written", ['"no"', "no"])
def test_mixed_precision_no_quoted_or_not(tmp_path, written):
    """Unquoted `no` is the text 'no' in 1.2 as quoted (PyYAML made it False): both get the one hint, since
    training and sampling now share one dtype vocabulary (fp32 | bf16 | fp16)."""
    root = _params_with(tmp_path, "  mixed_precision:", written)
    assert DVC_LOAD(str(root / "params.yaml"))["train"]["mixed_precision"] == "no"
    with pytest.raises(ParamsError, match=r"^train\.mixed_precision: 'no' is now spelled 'fp32'"):
        load_study(root)
    root = _params_with(tmp_path, "  mixed_precision:", "fp32")
    assert load_study(root).train("cat_grass", "train_instance").mixed_precision == "fp32"


@pytest.mark.parametrize("written, seed, error", [
    ("010", 10, None), ("0o10", 8, None),
    ("1:20", None, "priors.seed: expected an integer, got '1:20'"),
    ("on", None, "priors.seed: expected an integer, got 'on'"),
])
def test_seed_spellings_reach_the_stage_as_dvc_reads_them(tmp_path, written, seed, error):
    root = _params_with(tmp_path, "  seed:", written)  # the first `  seed:` is priors.seed
    assert DVC_LOAD(str(root / "params.yaml"))["priors"]["seed"] == (seed if error is None else written)
    if error is None:
        assert load_study(root).priors.seed == seed
    else:
        with pytest.raises(ParamsError) as err:
            load_study(root)
        assert str(err.value) == error, err.value


def _plain_only(value: Any) -> None:
    if isinstance(value, dict):
        assert type(value) is dict
        for k, v in value.items():
            assert type(k) is str, k
            _plain_only(v)
    elif isinstance(value, list):
        assert type(value) is list
        for v in value:
            _plain_only(v)
    else:
        assert type(value) in (str, int, float, bool, type(None)), (value, type(value))


def test_the_real_params_are_plain_types_and_equal_dvcs():
    raw = read_yaml(REPO / "params.yaml")
    _plain_only(raw)
    assert raw == DVC_LOAD(str(REPO / "params.yaml"))
    json.dumps(raw)  # MLflow and the manifests serialise what is read
    assert load_study(REPO).raw == raw


def test_a_key_written_twice_names_key_file_and_both_lines(tmp_path, monkeypatch):
    text = (REPO / "params.yaml").read_text().splitlines(keepends=True)
    first = next(i for i, line in enumerate(text) if line.startswith("    lr:"))  # train_scene.defaults.lr
    text.insert(first + 2, "    lr: 1.0e-6\n")
    (tmp_path / "params.yaml").write_text("".join(text))
    monkeypatch.chdir(tmp_path)  # the stages run in the study root: the file is named relative to it
    with pytest.raises(ParamsError) as err:
        load_study(tmp_path)
    assert str(err.value) == (f"params.yaml:{first + 3}: key 'train_scene.defaults.lr' appears twice in one "
                              f"mapping (line {first + 1} and {first + 3}); keep one")
    with pytest.raises(DvcYAMLError):  # DVC refuses the file too (PyYAML silently kept the last)
        DVC_LOAD(str(tmp_path / "params.yaml"))


@pytest.mark.parametrize("text, message", [
    ("a: 1\nb:\n  c: 2\n  c: 3\n", "params.yaml:4: key 'b.c' appears twice in one mapping (line 3 and 4); keep one"),
    ("a: [{x: 1, x: 2}]\n", "params.yaml:1: key 'a[0].x' appears twice in one mapping (line 1 and 1); keep one"),
    ("a: b: c\n", "params.yaml:1: not valid YAML: mapping values are not allowed here"),
    ("a:\n\tb: 1\n", "params.yaml:2: not valid YAML: found character '\\t' that cannot start any token"),
    ("a: 1\n---\nb: 2\n", "params.yaml:2: not valid YAML: but found another document (expected a single "
                          "document in the stream from line 1)"),
    ("a: !!python/object:os.system x\n", "params.yaml:1: not valid YAML: could not determine a constructor"),
    ("a: 2024-01-31\n", "a: YAML reads datetime.date(2024, 1, 31) as type date, not a params value"),
    ("", None),
])
def test_yaml_errors_are_one_line_with_file_and_line(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, text)
    if message is None:  # an empty file is {} for DVC too
        assert read_yaml("params.yaml") == DVC_LOAD("params.yaml") == {}
        return
    with pytest.raises(ParamsError) as err:
        read_yaml("params.yaml")
    assert str(err.value).startswith(message) and "\n" not in str(err.value), err.value


TRICKY = ["1e-5", "0o10", "010", "no", "yes", "on", "1:20", "0x1f", "1_000", ".5", "~", "", "null", "2024-01-31",
          "1.0e5", "plain", "12345678"]


def test_dump_yaml_reads_back_the_same_in_both_yaml_versions(tmp_path):
    data = {"texts": TRICKY, "numbers": [1e-5, 10, 0.5, float("inf")], "no": None, "flag": False,
            "nested": {"on": "off"}}
    path = _write(tmp_path, dump_yaml(data))
    assert read_yaml(path) == DVC_LOAD(str(path)) == yaml.safe_load(path.read_text()) == data
    # yaml.safe_dump alone writes '1e-5' and '0o10' plain, which DVC reads back as numbers
    path.write_text(yaml.safe_dump(data))
    assert read_yaml(path)["texts"][:2] == [1e-5, 8]


def test_studykit_edits_read_back_as_written(tmp_path):
    """Tests edit params through studykit: what DVC and the stage read is exactly what was set."""
    root = make_study(tmp_path / "study", ["cat_grass"], {"presets.sd15.revision": "0o10",
                                                          "train_scene.defaults.lr": 1e-5})
    edit_params(root, {"presets.sd21-base.revision": "1e-5"})
    raw = DVC_LOAD(str(root / "params.yaml"))
    assert raw == read_yaml(root / "params.yaml")
    assert raw["presets"]["sd15"]["revision"] == "0o10" and raw["presets"]["sd21-base"]["revision"] == "1e-5"
    assert raw["train_scene"]["defaults"]["lr"] == 1e-5
    study = load_study(root)
    assert study.train("cat_grass", "train_scene").lr == 1e-5


def test_duplicate_key_through_the_stage_script(tmp_path):
    """The real entry point: exit 1, one `error:` line naming params.yaml and both lines, no traceback."""
    root = make_study(tmp_path / "study", ["cat_grass"])
    path = root / "params.yaml"
    lines = path.read_text().splitlines(keepends=True)
    at = lines.index("prepare:\n") + 1
    lines.insert(at, "  crop: none\n")
    lines.insert(at + 1, "  crop: center\n")
    path.write_text("".join(lines))
    proc = subprocess.run([sys.executable, "stages/prepare.py", "--pair", "cat_grass"], cwd=root,
                          env={**env(root), "DREAMSOLO_WARM": "0",
                               "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: prepare: params.yaml:{at + 2}: key 'prepare.crop' appears twice in one mapping "
        f"(line {at + 1} and {at + 2}); keep one"], proc.stderr
