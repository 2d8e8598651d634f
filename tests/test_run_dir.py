import pytest
import torch
from conftest import CONFIGS, toy_overrides

from translator import run_dir as rd
from translator.config import load_config
from translator.data.bundle import write_bundle_files
from translator.data.vocab import build_vocab
from translator.files import atomic_write_text
from translator.model.transformer import Transformer
from translator.model.weights import load_run, save_weights


@pytest.fixture
def bundle(tmp_path):
    cfg = load_config(CONFIGS / "tiny.yaml", toy_overrides(tmp_path))
    src, tgt = build_vocab([["a", "dog", "runs"]]), build_vocab([["ein", "Hund", "läuft", "."]])
    torch.manual_seed(0)
    model = Transformer(cfg.model, len(src), len(tgt), src.pad_id).eval()
    path = tmp_path / "run"
    write_bundle_files(path, cfg, src, tgt)
    save_weights(model, path / rd.BEST)
    return path, cfg, model


def test_save_then_load_gives_identical_outputs(bundle):
    path, cfg, model = bundle
    run = load_run(path)
    assert run.cfg == cfg
    src = torch.tensor([[4, 5, 6, 3]])
    tgt = torch.tensor([[2, 4, 5]])
    with torch.no_grad():
        assert torch.equal(model(src, tgt), run.model(src, tgt))


def test_tied_weights_stay_tied_after_loading(bundle):
    run = load_run(bundle[0])
    assert run.model.generator.weight is run.model.tgt_embed.lut.weight


def test_not_a_run_dir(tmp_path):
    with pytest.raises(rd.RunError, match="does not exist"):
        load_run(tmp_path / "missing")
    with pytest.raises(rd.RunError, match="is not a run dir"):
        load_run(tmp_path)


def test_truncated_weights_are_a_clear_error(bundle):
    path = bundle[0]
    weights = path / rd.BEST
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(rd.RunError, match="cannot load weights"):
        load_run(path)


def test_vocabulary_that_does_not_match_the_weights(bundle):
    path = bundle[0]
    build_vocab([["many", "more", "tokens", "than", "before"]]).to_file(path / rd.SRC_VOCAB)
    with pytest.raises(rd.RunError, match="cannot load weights|do not match"):
        load_run(path)


def test_config_from_another_version(bundle):
    path = bundle[0]
    atomic_write_text(path / rd.CONFIG, "model:\n  n_layers: 3\n")
    with pytest.raises(rd.RunError, match="unknown key model.n_layers.*another version"):
        load_run(path)


def test_latest_run_is_the_newest_complete_bundle(tmp_path, bundle):
    import os

    path = bundle[0]
    older = tmp_path / "older"
    older.mkdir()
    for name in (rd.CONFIG, rd.BEST):
        (older / name).write_bytes((path / name).read_bytes())
    os.utime(older / rd.BEST, (1, 1))
    (tmp_path / "incomplete").mkdir()
    assert rd.latest_run(tmp_path) == path
    with pytest.raises(rd.RunError, match="no trained run found"):
        rd.latest_run(tmp_path / "nothing-here")


def test_atomic_writes_replace_whole_files_with_normal_permissions(tmp_path):
    import os
    import stat

    from translator.files import atomic_write

    path = tmp_path / "file.txt"
    atomic_write_text(path, "old")

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, crash)
    assert path.read_text() == "old"  # the previous complete file survives a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]  # no temp file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_a_run_made_before_activation_dropout_existed_keeps_its_rate(bundle):
    """Runs made before model.activation_dropout was a key trained with the rate of
    model.dropout (the key's old default, null); today's default (0.0) must not replace it
    when such a run is loaded, resumed or fine-tuned."""
    import yaml

    path, _, _ = bundle
    raw = yaml.safe_load((path / rd.CONFIG).read_text())
    del raw["model"]["activation_dropout"]
    atomic_write_text(path / rd.CONFIG, yaml.safe_dump(raw))
    assert rd.read_config(path).model.activation_dropout is None
