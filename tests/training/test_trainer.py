import dataclasses
import json
import math
import shutil

import pytest
import torch
from conftest import CONFIGS, TOY_BPE, tiny, toy_overrides, toy_pairs, train_command, write_split
from safetensors.torch import load_file

from translator import run_dir as rd
from translator.config import ConfigError, load_config
from translator.data.bundle import check_parent, read_bundle
from translator.data.corpus import Corpus, prepare
from translator.data.subword import Subword
from translator.device import resolve_precision
from translator.model.loss import sequence_loss
from translator.training.checkpoints import load_checkpoint
from translator.training.finetune import init_from_config
from translator.training.resume import resume_config
from translator.training.schedule import (
    TrainingState,
    finished,
    learning_rate,
    limit_met,
    planned_steps,
)
from translator.training.trainer import Trainer


def replace_train(cfg, **changes):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def read_metrics(run) -> list[dict]:
    return rd.read_metrics(run)


def test_learning_rate_warms_up_linearly_then_decays_as_inverse_sqrt():
    cfg = load_config(
        CONFIGS / "multi30k.yaml",
        ["train.lr=1e-3", "train.warmup_steps=100", "train.schedule=inverse_sqrt"],
    ).train
    assert learning_rate(50, cfg) == pytest.approx(5e-4)
    assert learning_rate(100, cfg) == pytest.approx(1e-3)
    assert learning_rate(400, cfg) == pytest.approx(5e-4)  # sqrt(100 / 400) = 1/2


def test_linear_schedule_warms_up_then_reaches_zero_at_the_end_of_the_budget():
    cfg = load_config(
        CONFIGS / "multi30k.yaml",
        ["train.lr=1e-3", "train.warmup_steps=100", "train.schedule=linear"],
    ).train
    assert learning_rate(50, cfg, planned_steps=1100) == pytest.approx(5e-4)
    assert learning_rate(100, cfg, planned_steps=1100) == pytest.approx(1e-3)
    assert learning_rate(600, cfg, planned_steps=1100) == pytest.approx(5e-4)
    assert learning_rate(1100, cfg, planned_steps=1100) == 0.0
    assert learning_rate(1200, cfg, planned_steps=1100) == 0.0  # never negative
    assert learning_rate(600, cfg, planned_steps=None) == pytest.approx(1e-3)  # end unknown
    # A budget that ends inside the warmup (a short time budget): up for half, down for half,
    # never stuck at the peak.
    assert learning_rate(30, cfg, planned_steps=60) == pytest.approx(1e-3)
    assert learning_rate(45, cfg, planned_steps=60) == pytest.approx(5e-4)
    assert learning_rate(60, cfg, planned_steps=60) == 0.0
    assert learning_rate(150, cfg, planned_steps=60) == 0.0


def test_the_budget_end_is_the_nearest_limit_a_time_limit_extrapolated(toy_data):
    cfg = tiny(toy_data, "train.max_steps=1000", "train.max_epochs=30", "train.max_minutes=2")
    at = TrainingState(step=100, epoch=5)
    assert planned_steps(cfg.train, at, epoch_batches=20) == 600  # 30 epochs x 20 batches
    assert planned_steps(cfg.train, at, 20, elapsed_s=60) == 200  # 100 steps a minute, 2 min
    assert planned_steps(cfg.train, at, 20, elapsed_s=6) == 600
    assert limit_met(cfg.train, at) is None
    assert limit_met(cfg.train, TrainingState(step=100, epoch=30)) == ("train.max_epochs", 30)
    assert limit_met(cfg.train, TrainingState(elapsed_s=120)) == ("train.max_minutes", 2)


def test_patience_counts_the_validations_since_the_best_and_a_tie_is_no_better(toy_data):
    cfg = tiny(toy_data, "train.max_steps=1000", "train.patience=2")
    state = TrainingState(step=10)
    assert state.validated(30.0) and finished(cfg.train, state) is None
    assert not state.validated(30.0)  # equal is not better: the first of equals stays best
    assert state.validated(31.0) and state.bad_validations == 0
    assert not state.validated(29.0) and finished(cfg.train, state) is None
    assert not state.validated(30.5)
    reason, key, _ = finished(cfg.train, state)
    assert (reason, key) == ("no better validation BLEU in 2 validations", "train.patience")
    assert state.best_bleu == 31.0


def test_a_linear_schedule_run_ends_with_a_learning_rate_of_zero(toy_data):
    # tiny.yaml: lr 0.003, 20 warmup steps, 40 steps, a line every 10
    run = Trainer(tiny(toy_data, "train.schedule=linear"), progress=False).train()
    records = [json.loads(x) for x in (run / rd.METRICS).read_text().splitlines()]
    lrs = [r["lr"] for r in records if "lr" in r]
    assert lrs == pytest.approx([0.0015, 0.003, 0.0015, 0.0])


def test_pad_labels_contribute_no_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    labels = torch.tensor([[4, 5, 6, 0], [4, 0, 0, 0]])
    changed = logits.clone()
    changed[labels == 0] = torch.randn(4, 7) * 100  # whatever the model says at pad positions
    for smoothing in (0.0, 0.1):
        assert torch.allclose(
            sequence_loss(logits, labels, 0, smoothing),
            sequence_loss(changed, labels, 0, smoothing),
        )
    real = sequence_loss(logits[labels != 0][None], labels[labels != 0][None], 0, 0.0)
    assert torch.allclose(sequence_loss(logits, labels, 0, 0.0), real)


def test_precision_choices_fall_back_where_unsupported():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) == torch.bfloat16
    assert resolve_precision("fp16", cpu) is None  # fp16 autocast is not offered on CPU


@pytest.mark.parametrize(
    "recipe",
    [
        ["train.optimizer=adam"],
        ["train.optimizer=nag", "train.lr=0.05"],
        ["model.dropout=0.1", "train.rdrop=1"],  # R-Drop: two dropout passes per batch
    ],
)
def test_a_tiny_model_learns_twenty_pairs_by_heart(tmp_path, recipe):
    pairs = toy_pairs(20, seed=5)
    folder = tmp_path / "twenty"
    folder.mkdir()
    for split in ("train", "val", "test_2016_flickr"):
        write_split(folder, split, pairs)
    cfg = tiny(
        folder,
        "vocab.min_freq=1",
        "model.d_model=64",
        "model.d_ff=128",
        "train.max_steps=150",
        "train.warmup_steps=10",
        "train.label_smoothing=0",
        "train.log_every=50",
        "train.valid_every=150",  # an epoch is one step here: validate once, at the end
        *recipe,
    )
    trainer = Trainer(cfg, progress=False)
    run = trainer.train()
    if cfg.train.optimizer == "nag":  # fairseq's default: SGD with Nesterov momentum
        assert isinstance(trainer.optimizer, torch.optim.SGD)
        assert trainer.optimizer.defaults["nesterov"] and trainer.optimizer.defaults["momentum"]
    from translator.decoding.translator import Translator

    outputs = Translator.load(run).translate([en for en, _ in pairs], beam_size=1)
    assert outputs == [de for _, de in pairs]
    records = [json.loads(line) for line in (run / rd.METRICS).read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < losses[0] / 5
    assert records[-1]["val_bleu"] == 100.0


def test_a_run_dir_holds_everything_to_translate_again(toy_data):
    run = Trainer(tiny(toy_data, "train.max_steps=10"), progress=False).train()
    names = {p.name for p in run.iterdir()}
    assert {
        rd.CONFIG,
        rd.SRC_VOCAB,
        rd.TGT_VOCAB,
        rd.BEST,
        rd.LAST,
        rd.STATE,
        rd.METRICS,
        rd.CURVES,
    } <= names
    assert not [n for n in names if n.endswith(".tmp")]  # no temp files left behind
    records = [json.loads(x) for x in (run / rd.METRICS).read_text().splitlines()]
    record = next(r for r in records if "train_loss" in r)
    assert {"step", "epoch", "train_loss", "lr", "tokens_per_s", "elapsed_s"} <= set(record)
    assert rd.read_config(run) == tiny(toy_data, "train.max_steps=10")
    assert rd.latest_run() == run


def test_the_log_shows_gradient_norms_and_how_often_clipping_cut_them(toy_data, tmp_path):
    def logged(run_dir, *extra):
        cfg = tiny(toy_data, "train.max_steps=8", "train.log_every=4", *extra)
        run = Trainer(cfg, run_dir=tmp_path / run_dir, progress=False).train()
        lines = (run / rd.METRICS).read_text().splitlines()
        return [r for r in map(json.loads, lines) if "train_loss" in r]

    always = logged("tight", "train.clip_norm=1e-6")
    assert len(always) == 2 and all(r["grad_norm"] > 1e-6 and r["clipped"] == 1.0 for r in always)
    never = logged("unclipped", "train.clip_norm=null")
    assert all(r["grad_norm"] > 0 and r["clipped"] == 0.0 for r in never)


def test_resume_continues_exactly_like_an_uninterrupted_run(toy_data, tmp_path):
    cfg = tiny(
        toy_data,
        "model.dropout=0.1",
        "train.max_steps=16",
        "train.log_every=4",
        "train.valid_every=1000",
    )
    straight = Trainer(cfg, run_dir=tmp_path / "straight", progress=False).train()

    half = tiny(
        toy_data,
        "model.dropout=0.1",
        "train.max_steps=8",
        "train.log_every=4",
        "train.valid_every=1000",
    )
    split = Trainer(half, run_dir=tmp_path / "split", progress=False).train()
    resumed_cfg = resume_config(split, ["train.max_steps=16"])
    Trainer(resumed_cfg, run_dir=split, resume=True, progress=False).train()

    a, b = load_file(straight / rd.LAST), load_file(split / rd.LAST)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    steps = [json.loads(x)["step"] for x in (split / rd.METRICS).read_text().splitlines()]
    assert steps == sorted(steps) and steps[-1] == 16


def test_a_run_saved_without_a_grad_scaler_resumes_under_fp16_with_a_fresh_one(toy_data, tmp_path):
    """A run trained in fp32 or bf16 (or on another device) saved an empty scaler state; a
    resume that picks fp16 must start a fresh scaler, not fail to load the empty one."""
    run = Trainer(tiny(toy_data, "train.max_steps=4"), run_dir=tmp_path / "r", progress=False)
    run = run.train()
    trainer = Trainer(resume_config(run, []), run_dir=run, resume=True, progress=False)
    trainer.setup()
    fp16_scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    state = load_checkpoint(run, trainer.model, trainer.optimizer, fp16_scaler)
    assert state.step == 4 and fp16_scaler.is_enabled() and fp16_scaler.get_scale() == 2.0**16


def test_resuming_a_bpe_dropout_run_says_it_is_not_bit_exact(toy_data, tmp_path, caplog):
    cfg = tiny(toy_data, *TOY_BPE, "vocab.bpe_dropout=0.1", "train.max_steps=3")
    run = Trainer(cfg, run_dir=tmp_path / "r", progress=False).train()
    resumed = resume_config(run, ["train.max_steps=4"])
    with caplog.at_level("WARNING", logger="translator"):
        Trainer(resumed, run_dir=run, resume=True, progress=False).train()
    assert "vocab.bpe_dropout" in caplog.text and "not bit for bit" in caplog.text


def test_resume_without_the_prepared_cache_uses_the_runs_own_bpe_and_continues_exactly(
    toy_data, tmp_path, monkeypatch, fresh_cache
):
    """The cache is a speed-up, not the source of truth: with it gone, a resumed run numbers
    the corpus with its own saved BPE and vocabularies (learning nothing) and ends bit-identical
    to a run that never stopped."""
    settings = (*TOY_BPE, "model.dropout=0.1", "train.log_every=4", "train.valid_every=1000")
    straight = Trainer(tiny(toy_data, *settings, "train.max_steps=16"), tmp_path / "straight",
                       progress=False).train()  # fmt: skip
    split = Trainer(tiny(toy_data, *settings, "train.max_steps=8"), tmp_path / "split",
                    progress=False).train()  # fmt: skip
    shutil.rmtree(fresh_cache)  # another machine, a cleaned ~/.cache, a format bump

    def no_learning(*args, **kwargs):
        raise AssertionError("resume learned a BPE instead of using the run's own")

    monkeypatch.setattr("translator.data.subword.Subword.train", no_learning)
    resumed = resume_config(split, ["train.max_steps=16"])
    Trainer(resumed, run_dir=split, resume=True, progress=False).train()
    a, b = load_file(straight / rd.LAST), load_file(split / rd.LAST)
    for name in a:
        assert torch.equal(a[name], b[name]), name


def test_a_run_with_separate_bpes_keeps_both_and_resumes_and_fine_tunes_from_them(
    toy_data, tmp_path, monkeypatch, fresh_cache
):
    separate = ("vocab.kind=bpe", "vocab.bpe_size=300", "vocab.joint=false", "train.max_steps=2")
    run = Trainer(tiny(toy_data, *separate), tmp_path / "r", progress=False).train()
    bundle = read_bundle(run)
    assert (run / rd.TGT_SUBWORD).exists() and bundle.tgt_subword is not None
    assert bundle.tgt_subword.to_str() != bundle.subword.to_str()  # learned on German text
    shutil.rmtree(fresh_cache)
    learned = Subword.train  # from here on, nothing may be learned again

    def no_learning(*args, **kwargs):
        raise AssertionError("a BPE was learned instead of using the run's own")

    monkeypatch.setattr(Subword, "train", no_learning)
    resumed = resume_config(run, ["train.max_steps=4"])
    Trainer(resumed, run_dir=run, resume=True, progress=False).train()
    child = init_from_config(
        CONFIGS / "tiny.yaml", toy_overrides(toy_data, "train.max_steps=2"), run
    )
    corpus = prepare(child)
    assert corpus.tgt_subword.to_str() == bundle.tgt_subword.to_str()
    assert corpus.src_vocab == bundle.src_vocab and corpus.tgt_vocab == bundle.tgt_vocab

    # A run dir from before both sides were kept: one clear line where the target side is needed.
    monkeypatch.setattr(Subword, "train", learned)
    (run / rd.TGT_SUBWORD).unlink()
    shutil.rmtree(fresh_cache)
    with pytest.raises(rd.RunError, match="lacks the target side's BPE"):
        Trainer(resume_config(run, ["train.max_steps=6"]), run, resume=True, progress=False).train()
    with pytest.raises(rd.RunError, match="keeps only the source's"):
        check_parent(run)


def test_a_resumed_run_may_not_change_its_model(toy_data, tmp_path):
    run = Trainer(
        tiny(toy_data, "train.max_steps=2"), run_dir=tmp_path / "r", progress=False
    ).train()
    with pytest.raises(ConfigError, match="a resumed run keeps its model"):
        resume_config(run, ["model.d_model=64"])
    assert resume_config(run, ["train.max_minutes=5"]).train.max_minutes == 5


def test_validation_bleu_and_loss_are_recorded(toy_data):
    run = Trainer(
        tiny(toy_data, "train.max_steps=20", "train.valid_every=10", "train.max_epochs=100"),
        progress=False,
    ).train()
    valid = [json.loads(x) for x in (run / rd.METRICS).read_text().splitlines()]
    valid = [r for r in valid if "val_bleu" in r]
    assert [r["step"] for r in valid] == [10, 20]
    assert all(0 <= r["val_bleu"] <= 100 and math.isfinite(r["val_loss"]) for r in valid)


def _train_then_signal(toy_data, run, signum):
    """Start a long training run in a subprocess, send it `signum` once it has logged a step;
    return its exit code and output."""
    import os
    import subprocess
    import time

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = train_command(
        toy_data, run, "train.max_steps=100000", "train.log_every=1", "train.valid_every=100000"
    )
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        deadline = time.time() + 180  # start-up is slow on a busy machine
        while not (run / rd.METRICS).exists() and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(signum)
        output, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()  # never leave a training process behind, whatever happened
    return proc.returncode, output


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(toy_data, tmp_path):
    import signal

    run = tmp_path / "interrupted"
    code, output = _train_then_signal(toy_data, run, signal.SIGINT)
    # 130 like any program stopped by Ctrl-C: `train && evaluate` must not go on
    assert code == 130, output
    assert "SIGINT" in output and "--resume" in output
    state = torch.load(run / rd.STATE, weights_only=True)
    assert state["step"] >= 1

    cfg = resume_config(run, [f"train.max_steps={state['step'] + 3}"])
    Trainer(cfg, run_dir=run, resume=True, progress=False).train()
    assert torch.load(run / rd.STATE, weights_only=True)["step"] == state["step"] + 3


def test_resuming_a_finished_run_changes_nothing_and_says_how_to_extend_it(
    toy_data, tmp_path, caplog
):
    import logging

    run = tmp_path / "done"
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        toy_overrides(toy_data, "train.max_steps=6", "train.valid_every=3",
                      "train.average_checkpoints=2"),
    )  # fmt: skip
    Trainer(cfg, run_dir=run, progress=False).train()
    before = {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()}
    with caplog.at_level(logging.INFO, logger="translator"):
        Trainer(resume_config(run, []), run_dir=run, resume=True, progress=False).train()
    assert {p.name: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    assert "is complete (reached train.max_steps=6); nothing was changed" in caplog.text
    assert "--set train.max_steps=12" in caplog.text
    # Stopped after its last step but before the end of training (the averaging): resuming only
    # finishes it, without training another step.
    metrics = run / rd.METRICS
    lines = [x for x in metrics.read_text().splitlines() if '"averaged"' not in x]
    metrics.write_text("".join(x + "\n" for x in lines))
    (run / "averaged.safetensors").unlink()
    Trainer(resume_config(run, []), run_dir=run, resume=True, progress=False).train()
    assert (run / "averaged.safetensors").exists()
    assert torch.load(run / rd.STATE, weights_only=True)["step"] == 6
    # A larger budget extends it as before.
    Trainer(
        resume_config(run, ["train.max_steps=8"]), run_dir=run, resume=True, progress=False
    ).train()
    assert torch.load(run / rd.STATE, weights_only=True)["step"] == 8


def test_the_bar_of_a_time_budget_ends_full_at_the_real_last_step(
    toy_data, tmp_path, capsys, monkeypatch
):
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # a terminal: a bar, not log lines
    cfg = load_config(
        CONFIGS / "tiny.yaml",
        toy_overrides(
            toy_data, "train.max_steps=null", "train.max_epochs=10000", "train.max_minutes=0.03",
            "train.log_every=5", "train.valid_every=100000",
        ),
    )  # fmt: skip
    run = Trainer(cfg, run_dir=tmp_path / "run", progress=True).train()
    steps = torch.load(run / rd.STATE, weights_only=True)["step"]
    frames = capsys.readouterr().err.split("\r")
    last = [f for f in frames if f.startswith("train")][-1]
    # Not the 10,000 epochs' step count: the pace measured against the 1.8 s, ending at 100%.
    assert "100%" in last and f" {steps}/{steps} " in last, last


def test_a_log_file_gets_plain_lines_one_event_each(toy_data, tmp_path):
    """Not a terminal (nohup, tee, CI): no progress-bar frames, no wrapped lines."""
    import re
    import subprocess
    import sys

    sets = toy_overrides(
        toy_data, "train.max_steps=20", "train.log_every=5", "train.valid_every=10"
    )
    command = [sys.executable, "-m", "translator", "train", "-c", str(CONFIGS / "tiny.yaml")]
    command += ["--run-dir", str(tmp_path / "run"), *(x for s in sets for x in ("--set", s))]
    with open(tmp_path / "train.log", "w") as log_file:
        done = subprocess.run(command, stdout=log_file, stderr=log_file, timeout=300)
    text = (tmp_path / "train.log").read_text()
    assert done.returncode == 0, text
    assert "\r" not in text and "Matplotlib" not in text
    lines = text.splitlines()
    assert all(re.match(r"\d\d:\d\d:\d\d (INFO|WARNING) ", line) for line in lines), lines
    progress = [line for line in lines if re.search(r"step +\d+  epoch .* tok/s", line)]
    assert len(progress) == 4  # every train.log_every steps: the bar's place in a file
    validations = [line for line in lines if "val_loss" in line]
    assert len(validations) == 2 and all("val_bleu" in line for line in validations)


def test_sigterm_saves_and_exits_143(toy_data, tmp_path):
    import signal

    run = tmp_path / "terminated"
    code, output = _train_then_signal(toy_data, run, signal.SIGTERM)
    assert code == 143, output
    assert "SIGTERM" in output and "--resume" in output and (run / rd.STATE).exists()


def test_bpe_dropout_trains_on_a_new_segmentation_every_epoch(toy_data, monkeypatch):
    cfg = tiny(
        toy_data, *TOY_BPE, "vocab.bpe_dropout=0.2", "train.max_epochs=3", "train.max_steps=1000"
    )
    samples = []
    original = Corpus.sample_train
    monkeypatch.setattr(
        Corpus, "sample_train", lambda self, p: samples.append(original(self, p)) or samples[-1]
    )
    trainer = Trainer(cfg, progress=False)
    trainer.train()
    assert len(samples) == trainer.state.epoch == 3
    full = trainer.data.corpus.splits["train"]
    assert all(len(s.tgt.ids) > len(full.tgt.ids) for s in samples)  # finer than the full BPE
    assert len({len(s.tgt.ids) for s in samples}) > 1  # and different every epoch (sampled)
    last, _ = samples[-1].filter_length(cfg.data.max_len)
    assert (trainer.data.train_pairs.tgt.ids == last.tgt.ids).all()  # the last epoch trained on it


def test_patience_stops_a_run_that_no_longer_improves(toy_data):
    # A learning rate too small to change the greedy outputs: BLEU never beats the first
    # validation, so patience 2 ends the run at the third validation, long before max_steps.
    cfg = tiny(toy_data, "train.lr=1e-9", "train.valid_every=5", "train.max_steps=100")
    patient = replace_train(cfg, patience=2)
    run = Trainer(patient, progress=False).train()
    validations = [r for r in read_metrics(run) if "val_bleu" in r]
    assert [r["step"] for r in validations] == [5, 10, 15]
    untired = Trainer(cfg, progress=False).train()  # no patience: the whole budget
    assert [r["step"] for r in read_metrics(untired) if "val_bleu" in r][-1] == 100


@pytest.mark.parametrize("better", [True, False])
def test_the_averaged_weights_are_kept_only_when_they_validate_better(toy_data, better):
    cfg = tiny(toy_data, "train.valid_every=5", "train.max_steps=15")
    trainer = Trainer(replace_train(cfg, average_checkpoints=3), progress=False)
    run = trainer.train()
    # The best weights: one kept checkpoint, never their average (which the end of training
    # may already have kept), so that keeping and reverting leave different files.
    shutil.copy(rd.kept_checkpoints(run)[0], run / rd.BEST)
    best_before, best_bleu = load_file(run / rd.BEST), trainer.state.best_bleu
    averaged_bleu = best_bleu + (1.0 if better else -1.0)
    trainer.validator.bleu = lambda: averaged_bleu  # what the average scores, either way
    trainer.average_checkpoints()
    best, averaged = load_file(run / rd.BEST), load_file(run / "averaged.safetensors")
    assert not all(torch.equal(best_before[name], averaged[name]) for name in best)
    expected = averaged if better else best_before
    assert all(torch.equal(best[name], expected[name]) for name in best)
    assert trainer.state.best_bleu == (averaged_bleu if better else best_bleu)
    # state.pt says so too: a resumed run must beat the average to replace it.
    assert rd.read_state(run)["best_bleu"] == trainer.state.best_bleu
    assert rd.read_state(run)["step"] == trainer.state.step
    # The model in memory holds the weights that ended up best, too.
    state = trainer.model.state_dict()
    assert all(torch.equal(state[name], expected[name]) for name in best)


def test_bidirectional_training_reads_each_pair_both_ways_for_its_share_of_the_budget(
    toy_data, tmp_path, monkeypatch
):
    """data.bidirectional (BiT): the first half of a 4-epoch budget trains on the pairs and their
    reverse, the rest on the pairs alone; a resumed run stays in the phase it was in."""
    from translator.training.data_feed import TrainingData

    switches, original = [], TrainingData.forward_only

    def noted(self):
        switches.append(len(self.train_pairs))
        original(self)

    monkeypatch.setattr(TrainingData, "forward_only", noted)
    sets = [*TOY_BPE, "data.bidirectional=0.5", "train.max_steps=null", "train.max_epochs=4"]
    trainer = Trainer(tiny(toy_data, *sets), run_dir=tmp_path / "bit", progress=False)
    trainer.setup()
    pairs, split = trainer.data.train_pairs, trainer.data.corpus.splits["train"]
    assert len(pairs) == 2 * len(split)  # each pair, then each pair reversed
    assert pairs.src[len(split) + 3].tolist() == split.tgt[3].tolist()
    assert pairs.tgt[len(split) + 3].tolist() == split.src[3].tolist()
    run = trainer.train()
    assert switches == [2 * len(split)]  # once, from both directions
    assert len(trainer.data.train_pairs) == len(split) and trainer.state.forward_only
    records = [json.loads(x) for x in (run / rd.METRICS).read_text().splitlines()]
    epochs = [r for r in records if "val_bleu" in r]
    assert len(epochs) == 4

    # Resumed with a budget whose half lies ahead, it stays in its second phase.
    resumed = Trainer(
        resume_config(run, ["train.max_epochs=20", "train.max_steps=null"]),
        run_dir=run, resume=True, progress=False,
    )  # fmt: skip
    resumed.setup()
    assert not resumed.data.both_directions and len(resumed.data.train_pairs) == len(split)


def test_bidirectional_training_needs_one_vocabulary(toy_data):
    with pytest.raises(ConfigError, match="data.bidirectional .* needs vocab.joint: true"):
        tiny(toy_data, *TOY_BPE, "vocab.joint=false", "model.share_all_embeddings=false",
             "data.bidirectional=0.3")  # fmt: skip


def test_rdrop_from_starts_r_drop_once_its_share_of_the_budget_is_used(
    toy_data, tmp_path, monkeypatch
):
    """train.rdrop_from 0.5 of a 4-epoch budget: two epochs of single passes, then R-Drop's
    two passes per batch; a resumed run knows it had started."""
    from translator.training import trainer as trainer_module

    weights, original = [], trainer_module.OptimizerStep

    def recorded(*args, **kwargs):
        weights.append(kwargs.get("rdrop", 0.0))
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "OptimizerStep", recorded)
    sets = ["model.dropout=0.1", "train.rdrop=2", "train.rdrop_from=0.5",
            "train.max_steps=null", "train.max_epochs=4"]  # fmt: skip
    trainer = Trainer(tiny(toy_data, *sets), run_dir=tmp_path / "rdrop", progress=False)
    run = trainer.train()
    per_epoch = len(weights) // 4
    assert weights == [0.0] * (2 * per_epoch) + [2.0] * (2 * per_epoch)
    assert trainer.state.rdrop_on
    resumed = Trainer(
        resume_config(run, ["train.max_epochs=6", "train.max_steps=null"]),
        run_dir=run, resume=True, progress=False,
    )  # fmt: skip
    resumed.setup()
    assert resumed.state.rdrop_on
    with pytest.raises(ConfigError, match="train.rdrop_from says when R-Drop starts"):
        tiny(toy_data, "train.rdrop_from=0.5")


def test_rdrop_from_starts_within_an_epoch_when_the_budget_ends_in_it(
    toy_data, tmp_path, monkeypatch
):
    """A budget of one epoch's steps with train.rdrop_from 0.5: R-Drop takes the second half
    of the steps, not never (the start is not left to the next epoch's beginning)."""
    from translator.training import trainer as trainer_module

    weights, original = [], trainer_module.OptimizerStep

    def recorded(*args, **kwargs):
        weights.append(kwargs.get("rdrop", 0.0))
        return original(*args, **kwargs)

    monkeypatch.setattr(trainer_module, "OptimizerStep", recorded)
    steps = 6
    sets = ["model.dropout=0.1", "train.rdrop=2", "train.rdrop_from=0.5", "data.max_sentences=4",
            f"train.max_steps={steps}", "train.max_epochs=null"]  # fmt: skip
    trainer = Trainer(tiny(toy_data, *sets), run_dir=tmp_path / "rdrop", progress=False)
    trainer.train()
    assert trainer._epoch_batches > steps  # the whole budget lies inside the first epoch
    assert weights == [0.0] * (steps // 2) + [2.0] * (steps // 2)
