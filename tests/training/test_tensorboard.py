"""TensorBoard: the events mirror metrics.jsonl (same names, steps and values), show validation
samples and the config, and a resumed run shows each step once."""

import json

import pytest
from conftest import tiny
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from translator import run_dir as rd
from translator.training.resume import resume_config
from translator.training.trainer import Trainer


def events(run):
    acc = EventAccumulator(str(run / rd.TENSORBOARD), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(acc, tag) -> list[tuple[int, float]]:
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def metrics(run, key) -> list[tuple[int, float]]:
    return [(r["step"], r[key]) for r in rd.read_metrics(run) if key in r]


SETTINGS = ("train.log_every=2", "train.valid_every=4", "train.max_epochs=100")


def test_every_metrics_scalar_is_in_tensorboard_at_its_step(toy_data, tmp_path):
    run = Trainer(tiny(toy_data, "train.max_steps=8", *SETTINGS), tmp_path / "r", progress=False)
    run = run.train()
    acc = events(run)
    for key in ("train_loss", "lr", "grad_norm", "tokens_per_s", "val_loss", "val_ppl", "val_bleu"):
        expected = metrics(run, key)
        assert expected, key
        got = scalars(acc, key)
        assert [s for s, _ in got] == [s for s, _ in expected], key
        assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6), key
    texts = acc.Tags()["tensors"]
    assert "val_samples/text_summary" in texts and "config/text_summary" in texts
    sample = acc.Tensors("val_samples/text_summary")[-1].tensor_proto.string_val[0].decode()
    assert "| source | reference | output |" in sample and sample.count("\n") >= 3


def test_a_resumed_run_shows_each_step_once_with_the_resumed_values(
    toy_data, tmp_path, monkeypatch
):
    cfg = tiny(toy_data, "train.max_steps=12", *SETTINGS)
    original = Trainer.train_step

    def crash_after_step_6(self, group):
        if self.state.step == 6:  # steps 5 and 6 are logged but never saved (state.pt: step 4)
            raise RuntimeError("simulated crash")
        return original(self, group)

    monkeypatch.setattr(Trainer, "train_step", crash_after_step_6)
    with pytest.raises(RuntimeError, match="simulated crash"):
        Trainer(cfg, tmp_path / "r", progress=False).train()
    run = tmp_path / "r"
    assert rd.read_status(run)["status"] == "failed"
    assert [s for s, _ in scalars(events(run), "train_loss")] == [2, 4, 6]

    monkeypatch.setattr(Trainer, "train_step", original)
    Trainer(resume_config(run, []), run, resume=True, progress=False).train()
    acc = events(run)
    got, expected = scalars(acc, "train_loss"), metrics(run, "train_loss")
    assert [s for s, _ in got] == [2, 4, 6, 8, 10, 12] == [s for s, _ in expected]
    # step 6 is the resumed run's value, not the lost one's
    assert [v for _, v in got] == pytest.approx([v for _, v in expected], rel=1e-6)
    assert rd.read_status(run)["status"] == "complete"


def test_tensorboard_false_writes_no_events(toy_data, tmp_path):
    cfg = tiny(toy_data, "train.max_steps=2", "train.tensorboard=false")
    run = Trainer(cfg, tmp_path / "r", progress=False).train()
    assert not (run / rd.TENSORBOARD).exists()
    assert json.loads((run / rd.STATUS).read_text())["status"] == "complete"
