"""Interruptions, hostile input, numerical faults and resource errors: clear answers, no damage."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import (
    CONFIGS,
    TOY_BPE,
    assert_one_line_error,
    tiny,
    toy_overrides,
    toy_pairs,
    train_command,
    write_split,
)
from safetensors.torch import load_file
from typer.testing import CliRunner

from translator import run_dir as rd
from translator.cli.main import app
from translator.files import atomic_write_text
from translator.model.weights import load_run
from translator.training.optimizer_step import TrainingError
from translator.training.trainer import Trainer

runner = CliRunner()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny BPE run to throw hostile input at."""
    folder = tmp_path_factory.mktemp("toy")
    for split, seed in (("train", 1), ("val", 2), ("test_2016_flickr", 3)):
        write_split(folder, split, toy_pairs(200 if split == "train" else 20, seed))
    cfg = tiny(folder, *TOY_BPE, "train.max_steps=10", f"data.cache_dir={folder / 'cache'}")
    return Trainer(cfg, run_dir=folder / "run", progress=False).train()


def translate(run, *args, input=None):
    return runner.invoke(app, ["translate", "--run", str(run), *map(str, args)], input=input)


HOSTILE_LINES = {
    "empty": "",
    "whitespace": " \t  ",
    "control and escape characters": "A dog\x1b[31m runs\x07 \x00here.",
    "emoji": "A dog 🐕 runs 🏃.",
    "other scripts": "Собака бежит. 犬が走る。 كلب يركض",
    "thousands of words": " ".join(["dog"] * 3000),
}


def test_hostile_lines_each_get_a_line_and_alignment_is_kept(trained, tmp_path, caplog):
    source = tmp_path / "hostile.en"
    source.write_text("\n".join(HOSTILE_LINES.values()) + "\n", encoding="utf-8")
    out = tmp_path / "out.de"
    result = translate(trained, "--input", source, "--output", out, "--greedy")
    assert result.exit_code == 0, result.output
    lines = out.read_text(encoding="utf-8").split("\n")[:-1]
    assert len(lines) == len(HOSTILE_LINES)
    assert lines[0] == "" and lines[1] == ""  # nothing in, nothing out
    assert all(lines[2:])
    assert "cut to fit" in caplog.text  # the 3,000-word line was shortened, with a warning


@pytest.mark.parametrize(
    "args, code, text",
    [
        (["A dog.", "--beam", "-3"], 2, "--beam must be at least 1"),
        (["A dog.", "--max-len", "0"], 2, "--max-len must be at least 1"),
        (["--input", "/nonexistent/in.en"], 1, "does not exist"),
    ],
)
def test_bad_translate_arguments_are_one_line(trained, args, code, text):
    assert_one_line_error(translate(trained, *args), code, text)


def test_invalid_utf8_and_directories_are_one_line(trained, tmp_path):
    bad = tmp_path / "bad.en"
    bad.write_bytes(b"A dog \xff\xfe runs.\n")
    assert_one_line_error(translate(trained, "--input", bad), 1, "not valid UTF-8")
    assert_one_line_error(translate(trained, "--input", tmp_path), 1, "is a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads unreadable files")
def test_an_unreadable_file_is_one_line(trained, tmp_path):
    locked = tmp_path / "locked.en"
    locked.write_text("A dog.\n")
    locked.chmod(0)
    assert_one_line_error(translate(trained, "--input", locked), 1, "ermission")


def test_references_with_another_line_count_are_refused(trained, tmp_path):
    src, ref = tmp_path / "a.en", tmp_path / "b.de"
    src.write_text("A dog.\nA cat.\n")
    ref.write_text("Ein Hund.\n")
    result = runner.invoke(
        app, ["evaluate", "--run", str(trained), "--src", str(src), "--ref", str(ref)]
    )
    assert_one_line_error(result, 1, "has 2 lines but")


def test_a_run_dir_that_is_not_one(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(translate(tmp_path / "empty", "A dog."), 1, "is not a run dir")


def test_a_missing_bpe_file_is_a_clear_error(trained, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(trained, copy)
    (copy / rd.SUBWORD).write_text("{not json")
    assert_one_line_error(translate(copy, "A dog."), 1, "damaged subword.json")


# -- numerical faults and resources ------------------------------------------------------------


class FaultyTrainer(Trainer):
    """Its forward pass fails at chosen steps."""

    def __init__(self, *args, fault, steps, **kwargs):
        super().__init__(*args, **kwargs)
        self.fault, self.fault_steps = fault, steps

    def _setup_model(self):
        super()._setup_model()
        forward = self.forward

        def faulty(src, tgt):
            logits = forward(src, tgt)
            if self.state.step in self.fault_steps:
                if self.fault == "nan":
                    return logits * float("nan")
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return logits

        self.forward = faulty


def test_a_nan_loss_skips_the_step_and_training_goes_on(toy_data, tmp_path):
    cfg = tiny(toy_data, "train.max_steps=8", "train.log_every=4")
    trainer = FaultyTrainer(cfg, run_dir=tmp_path / "r", progress=False, fault="nan", steps={3, 4})
    run = trainer.train()
    records = [json.loads(x) for x in (run / rd.METRICS).read_text().splitlines()]
    logged = [r for r in records if "train_loss" in r]
    assert logged[-1]["skipped_steps"] == 2 and logged[-1]["step"] == 8
    assert all(torch.isfinite(t).all() for t in load_file(run / rd.LAST).values())


def test_too_many_nan_steps_in_a_row_stop_with_the_last_good_checkpoint(toy_data, tmp_path):
    cfg = tiny(toy_data, "train.max_steps=40", "train.valid_every=5")
    trainer = FaultyTrainer(
        cfg, run_dir=tmp_path / "r", progress=False, fault="nan", steps=set(range(6, 100))
    )
    with pytest.raises(TrainingError, match="10 steps in a row had a NaN/inf loss"):
        trainer.train()
    state = torch.load(tmp_path / "r" / rd.STATE, weights_only=True)
    assert state["step"] in (5, 10)
    for name in (rd.LAST, rd.BEST):
        assert all(torch.isfinite(t).all() for t in load_file(tmp_path / "r" / name).values())


def test_out_of_memory_names_the_batch_and_the_setting_to_lower(toy_data, tmp_path):
    cfg = tiny(toy_data, "train.max_steps=5")
    trainer = FaultyTrainer(cfg, run_dir=tmp_path / "r", progress=False, fault="oom", steps={2})
    with pytest.raises(
        TrainingError,
        match=r"out of memory on a batch of \d+ sentences x \d+ "
        r"tokens .*lower data.max_tokens \(now 1024\)",
    ):
        trainer.train()


def test_an_unwritable_run_dir_is_reported_before_training(toy_data, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    args = ["train", "-c", str(CONFIGS / "tiny.yaml"), "--run-dir", str(blocker / "run")]
    sets = [x for pair in toy_overrides(toy_data) for x in ("--set", pair)]
    result = runner.invoke(app, args + sets)
    assert_one_line_error(result, 1, "cannot write to run dir")


def test_a_full_disk_keeps_the_previous_file_whole(tmp_path, monkeypatch):
    target = tmp_path / "state.json"
    atomic_write_text(target, "the good old content")

    def no_space(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("pathlib.Path.write_text", no_space)
    with pytest.raises(OSError, match="No space left"):
        atomic_write_text(target, "new")
    monkeypatch.undo()
    assert target.read_text() == "the good old content"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp file left


# -- SIGKILL at several points ---------------------------------------------------------------


def _train_command(toy_data, run, *extra):
    return train_command(
        toy_data, run, "model.dropout=0.1", "train.max_steps=60", "train.valid_every=5", *extra
    )


def _resume_command(run):
    return [
        sys.executable,
        "-m",
        "translator",
        "train",
        "--resume",
        "--run-dir",
        str(run),
        "--no-progress",
    ]


def _saved_steps(run) -> list[int]:
    if not (run / rd.METRICS).exists():
        return []
    return [r["step"] for r in rd.read_metrics(run) if "val_bleu" in r]


def _assert_every_file_loads(run):
    for path in run.iterdir():
        if path.suffix == ".safetensors":
            load_file(path)
    torch.load(run / rd.STATE, weights_only=True)
    load_run(run)


@pytest.mark.slow  # `make test-all` and CI run it; `make test` skips it
def test_sigkill_at_several_points_then_resume_matches_an_uninterrupted_run(toy_data, tmp_path):
    straight = tmp_path / "straight"
    subprocess.run(_train_command(toy_data, straight), check=True, capture_output=True)

    run = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    for kill_after_saves, resume in ((1, False), (4, True), (7, True)):
        command = _resume_command(run) if resume else _train_command(toy_data, run)
        proc = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.time() + 120
            # A metrics line is written just before its checkpoint: wait for the state too, which
            # is written last, so that the first kill finds a resumable run however slow the host.
            while (
                len(_saved_steps(run)) < kill_after_saves or not (run / rd.STATE).exists()
            ) and time.time() < deadline:
                time.sleep(0.01)
            time.sleep(0.05)  # land somewhere inside the next steps, or a save
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            proc.kill()
        assert proc.returncode == -signal.SIGKILL
        _assert_every_file_loads(run)
    done = subprocess.run(_resume_command(run), capture_output=True)
    assert done.returncode == 0, done.stderr.decode()

    a, b = load_file(straight / rd.LAST), load_file(run / rd.LAST)
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert _saved_steps(run) == _saved_steps(straight)  # the history has no duplicates
