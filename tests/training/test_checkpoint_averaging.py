"""Checkpoint averaging: kept checkpoints, their mean, at the end of training and on demand."""

import json

import pytest
import torch
from conftest import CONFIGS, TOY_BPE, toy_overrides
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from translator import run_dir as rd
from translator.cli.main import app
from translator.config import load_config
from translator.model.weights import load_run
from translator.run_dir import AVERAGED, kept_checkpoints
from translator.training.checkpoints import average_into
from translator.training.trainer import Trainer


@pytest.fixture
def averaged_run(toy_data, tmp_path):
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        toy_overrides(
            toy_data,
            *TOY_BPE,
            "train.max_steps=20",
            "train.valid_every=5",
            "train.average_checkpoints=3",
        ),
    )
    return Trainer(cfg, run_dir=tmp_path / "run", progress=False).train()


def test_training_keeps_the_last_n_checkpoints_and_averages_them(averaged_run):
    kept = kept_checkpoints(averaged_run)
    assert [p.name for p in kept] == [f"step-{s:07d}.safetensors" for s in (10, 15, 20)]
    tensors = [load_file(p) for p in kept]
    averaged = load_file(averaged_run / AVERAGED)
    for name, value in averaged.items():
        assert torch.allclose(value, sum(t[name] for t in tensors) / 3, atol=1e-6), name
    records = [json.loads(x) for x in (averaged_run / rd.METRICS).read_text().splitlines()]
    final = records[-1]
    assert final["averaged"] == 3 and "val_bleu_averaged" in final
    best_single = max(r["val_bleu"] for r in records if "val_bleu" in r)
    assert final["best_bleu"] == max(best_single, final["val_bleu_averaged"])


def test_the_average_command_writes_weights_that_translate(averaged_run):
    result = CliRunner().invoke(app, ["average", "--run", str(averaged_run), "--last", "1"])
    assert result.exit_code == 0, result.output
    newest = load_file(kept_checkpoints(averaged_run)[-1])
    assert all(torch.equal(t, newest[n]) for n, t in load_file(averaged_run / AVERAGED).items())
    result = CliRunner().invoke(
        app,
        ["evaluate", "--run", str(averaged_run), "--weights", AVERAGED, "--split", "val", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["bleu"] >= 0


def test_checkpoints_of_another_model_are_refused(averaged_run, tmp_path):
    stranger = tmp_path / "stranger.safetensors"
    save_file({"w": torch.zeros(2)}, stranger)
    model = load_run(averaged_run).model
    with pytest.raises(rd.RunError, match="holds other tensors"):
        average_into(model, [*kept_checkpoints(averaged_run), stranger])
    result = CliRunner().invoke(app, ["average", "--run", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "does not exist" in result.stderr
