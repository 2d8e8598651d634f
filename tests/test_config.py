import dataclasses
from pathlib import Path

import pytest
from conftest import CONFIGS

from translator.config import (
    Config,
    ConfigError,
    config_from_dict,
    config_to_dict,
    dump_config,
    load_config,
)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_validates(path: Path):
    cfg = load_config(path)
    assert cfg.name == path.stem
    assert cfg.model.d_model % cfg.model.n_heads == 0


def test_default_config_is_multi30k():
    assert load_config(None).name == "multi30k"


def test_overrides_are_parsed_as_yaml_scalars():
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        [
            "model.d_model=64",
            "train.lr=3e-4",
            "data.lowercase=true",
            "train.max_minutes=null",
            "train.betas=[0.9, 0.99]",
            "data.dir=/some/where",
        ],
    )
    assert cfg.model.d_model == 64
    assert cfg.train.lr == pytest.approx(3e-4) and isinstance(cfg.train.lr, float)
    assert cfg.data.lowercase is True
    assert cfg.train.max_minutes is None
    assert cfg.train.betas == (0.9, 0.99)
    assert cfg.data.dir == "/some/where"


def test_override_wins_over_file_and_file_over_default():
    assert load_config(CONFIGS / "tiny.yaml").model.d_model == 32  # file beats default 256
    assert load_config(CONFIGS / "tiny.yaml", ["model.d_model=48"]).model.d_model == 48


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.d_modl=128", "unknown key model.d_modl"),
        ("modle.d_model=128", "unknown key modle"),
        ("model.d_model=big", "model.d_model must be int"),
        ("model.d_model=1.5", "model.d_model must be int"),
        ("data.lowercase=3", "data.lowercase must be bool"),
        ("model.d_model=-8", "model.d_model must be > 0"),
        ("model.d_model=130", "model.d_model (130) must be divisible by model.n_heads"),
        ("model.dropout=1.5", "model.dropout must be in [0, 1)"),
        ("model.activation_dropout=-0.1", "model.activation_dropout must be in [0, 1)"),
        ("model.norm=middle", "model.norm must be one of post, pre"),
        ("train.precision=fp8", "train.precision must be one of"),
        ("train.optimizer=lion", "train.optimizer must be one of adam, adamw, nag"),
        ("train.momentum=1.0", "train.momentum must be in (0, 1)"),
        ("train.momentum=0", "train.momentum must be in (0, 1)"),
        ("train.rdrop=-1", "train.rdrop must be >= 0"),
        ("data.max_len=500", "exceeds model.max_positions"),
        ("model.d_model", "--set expects KEY=VALUE"),
        ("=3", "--set expects KEY=VALUE"),
        ("model.d_model.x=3", "is not a section"),
    ],
)
def test_bad_values_give_one_error_naming_the_key_and_file(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(CONFIGS / "multi30k.yaml", [override])
    text = str(err.value)
    key = override.partition("=")[0]
    # A problem of a key set on the command line is blamed on that --set, with the key named once.
    assert message in text or (
        text.startswith(f"--set {override}: ") and message.removeprefix(f"{key} ") in text
    )
    assert "\n" not in text
    if not text.startswith("--set"):
        assert "multi30k.yaml" in text


def test_rdrop_without_dropout_is_refused_as_wasted_compute():
    assert load_config(CONFIGS / "multi30k.yaml", ["train.rdrop=3"]).train.rdrop == 3.0
    with pytest.raises(ConfigError, match="train.rdrop needs dropout"):
        load_config(CONFIGS / "multi30k.yaml", ["train.rdrop=3", "model.dropout=0"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  d_model: [1, 2\n")
    with pytest.raises(ConfigError, match="bad.yaml.*invalid YAML"):
        load_config(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(scalar)


def test_resolved_config_round_trips_through_yaml(tmp_path):
    cfg = load_config(CONFIGS / "seed.yaml", ["train.lr=1e-3"])
    path = tmp_path / "config.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert config_from_dict(config_to_dict(cfg)) == cfg


def test_an_empty_config_takes_every_default():
    cfg = config_from_dict({})
    # Split names are the source's own: Multi30k's unless data.source says otherwise.
    splits = dict(train_split="train", valid_split="val", test_split="test2016")
    assert cfg == dataclasses.replace(Config(), data=dataclasses.replace(Config().data, **splits))


def test_split_names_follow_the_source_and_paths_become_absolute(tmp_path, monkeypatch):
    hub = config_from_dict({"data": {"source": "hub", "hub": "wmt14", "hub_config": "de-en"}})
    assert (hub.data.train_split, hub.data.valid_split, hub.data.test_split) == (
        "train",
        "validation",
        "test",
    )
    monkeypatch.chdir(tmp_path)
    files = {"source": "files", "train_split": "c/train", "valid_split": "dev.tsv",
             "test_split": "/data/test.jsonl"}  # fmt: skip
    d = config_from_dict({"data": files}).data
    assert (d.train_split, d.valid_split, d.test_split) == (
        str(tmp_path / "c/train"),
        str(tmp_path / "dev.tsv"),
        "/data/test.jsonl",
    )
    with pytest.raises(ConfigError, match="data.source files needs data.valid_split"):
        config_from_dict({"data": {"source": "files", "train_split": "a"}})
    with pytest.raises(ConfigError, match="data.source hub needs data.hub"):
        config_from_dict({"data": {"source": "hub"}})
    with pytest.raises(ConfigError, match="data.source must be one of multi30k, files, hub"):
        config_from_dict({"data": {"source": "ftp"}})


def test_a_shipped_config_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_config("tiny").name == "tiny" and load_config("seed.yaml").name == "seed"
    assert load_config(None).name == "multi30k"
    (tmp_path / "tiny.yaml").write_text("model:\n  d_model: 64\n  n_heads: 2\n")
    assert load_config("tiny.yaml").model.d_model == 64  # a file here comes first
    with pytest.raises(ConfigError, match=r"not found: nope \(shipped configs: finetune, multi"):
        load_config("nope")


@pytest.mark.slow  # builds a wheel (~15 s): `make test-all` and CI run it
def test_the_wheel_ships_the_configs(tmp_path):
    import shutil
    import subprocess
    import sys
    import zipfile

    source = tmp_path / "source"  # a clean copy: no build files left by an editable install
    junk = shutil.ignore_patterns(".*", "*.egg-info", "build", "runs", "__pycache__", "docs")
    shutil.copytree(CONFIGS.parent, source, symlinks=True, ignore=junk)
    import importlib.util

    # Build with this environment's setuptools when it has one (fast, offline), else as pip does.
    isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", *isolation, "-q",
         "-w", str(tmp_path), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = tmp_path.glob("translator-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {f"translator/configs/{c.name}" for c in CONFIGS.glob("*.yaml")} <= set(names)


def readme_defaults() -> dict[str, str]:
    """The README config table's defaults by dotted key (rows `| `a.b`, `c` | `1`, `2` |`)."""
    import re

    table = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    defaults = {}
    row = r"^\| (`(?:data|vocab|model|train|decode)\.[^|]*) \| ([^|]*) \|"
    for keys, values in re.findall(row, table, re.M):
        names, stated = re.findall(r"`([^`]+)`", keys), re.findall(r"`([^`]+)`", values)
        section = names[0].split(".")[0]
        dotted = [name if "." in name else f"{section}.{name}" for name in names]
        if len(stated) == len(dotted):  # ("source's" and such say it in words)
            defaults.update(zip(dotted, stated, strict=True))
    return defaults


def test_a_bare_train_uses_the_defaults_config_py_and_the_readme_state(tmp_path):
    """One source of defaults: `translator train` without -c trains config.py's defaults, and
    the README's table states those same values."""
    import yaml

    from translator.run_table import flat_config

    nothing_set = tmp_path / "multi30k.yaml"
    nothing_set.write_text("")
    assert load_config(None) == load_config(nothing_set)  # what `translator train` trains
    defaults = flat_config(Config())
    stated = readme_defaults()
    assert len(stated) > 60  # the table was read
    wrong = {
        key: (value, defaults[key])
        for key, value in stated.items()
        if yaml.safe_load(value) != _plain(defaults[key])
    }
    assert not wrong, f"README states other defaults than config.py: {wrong}"


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
