"""Shared fixtures: a small synthetic EN->DE corpus in Multi30k's layout, isolated dirs."""

from __future__ import annotations

import gzip
import io
import os
import random
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch

from translator.config import ModelConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs"
REAL_DATA = os.environ.get("TRANSLATOR_DATA_DIR")

# A toy language pair with German word order and capitalised nouns, so that a tiny model can learn
# it in seconds and detokenization has punctuation to glue.
SUBJECTS = {
    "a dog": "Ein Hund",
    "a man": "Ein Mann",
    "a woman": "Eine Frau",
    "the child": "Das Kind",
    "two girls": "Zwei Mädchen",
    "the cat": "Die Katze",
}
VERBS = {"runs": "läuft", "sleeps": "schläft", "plays": "spielt", "waits": "wartet"}
PLURAL_VERBS = {"runs": "laufen", "sleeps": "schlafen", "plays": "spielen", "waits": "warten"}
PLACES = {
    "in the park": "im Park",
    "on the street": "auf der Straße",
    "in the snow": "im Schnee",
    "at the beach": "am Strand",
}


def toy_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        subj, verb, place = (rng.choice(list(d)) for d in (SUBJECTS, VERBS, PLACES))
        de_verb = PLURAL_VERBS[verb] if subj.startswith("two") else VERBS[verb]
        pairs.append(
            (f"{subj.capitalize()} {verb} {place}.", f"{SUBJECTS[subj]} {de_verb} {PLACES[place]}.")
        )
    return pairs


def write_split(folder: Path, split: str, pairs: list[tuple[str, str]]) -> None:
    for lang, column in (("en", 0), ("de", 1)):
        # mtime=0: the same pairs give the same bytes, so tests share one prepared cache
        with gzip.GzipFile(folder / f"{split}.{lang}.gz", "wb", mtime=0) as raw:
            with io.TextIOWrapper(raw, encoding="utf-8") as f:
                f.writelines(pair[column] + "\n" for pair in pairs)


def write_toy_corpus(folder: Path) -> Path:
    """The toy corpus in Multi30k's layout: 400 training pairs, 40 for val and for test."""
    folder.mkdir(parents=True, exist_ok=True)
    write_split(folder, "train", toy_pairs(400, seed=1))
    write_split(folder, "val", toy_pairs(40, seed=2))
    write_split(folder, "test_2016_flickr", toy_pairs(40, seed=3))
    return folder


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    return write_toy_corpus(tmp_path / "toy_multi30k")


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test models are tiny: they gain nothing from more threads, and on a busy 2-core machine a
    second spinning OpenMP thread makes the suite several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One prepared-corpus cache for the whole suite. Its keys hash the data's content and every
    setting that shapes the corpus, so tests that prepare the same corpus share the work."""
    return tmp_path_factory.mktemp("prepared")


@pytest.fixture(autouse=True)
def isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shared_cache: Path) -> None:
    """Each test gets its own runs folder, and the suite's shared corpus cache."""
    monkeypatch.setenv("TRANSLATOR_CACHE_DIR", str(shared_cache))
    monkeypatch.setenv("TRANSLATOR_RUNS_DIR", str(tmp_path / "runs"))


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A corpus cache of the test's own: for tests of building, reusing or losing one."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TRANSLATOR_CACHE_DIR", str(path))
    return path


# A joint BPE small enough for the toy corpus, with all embeddings shared (the default's scheme).
TOY_BPE = (
    "vocab.kind=bpe",
    "vocab.joint=true",
    "vocab.bpe_size=300",
    "model.share_all_embeddings=true",
)


def toy_overrides(data_dir: Path, *extra: str) -> list[str]:
    """--set pairs that point a config at the toy corpus."""
    return [f"data.dir={data_dir}", "data.verify_checksums=false", *extra]


def tiny(data_dir: Path, *extra: str):
    """configs/tiny.yaml pointed at the toy corpus in `data_dir`, with `extra` overrides."""
    return load_config(CONFIGS / "tiny.yaml", toy_overrides(data_dir, *extra))


@pytest.fixture
def toy_config(toy_data: Path):
    """configs/tiny.yaml pointed at the toy corpus."""
    return tiny(toy_data)


def train_command(data_dir: Path, run: Path, *extra: str, options: tuple = ()) -> list[str]:
    """`python -m translator train` of configs/tiny.yaml on the toy corpus into `run`, as a
    subprocess argv (for tests that signal, kill or launch training processes)."""
    sets = [x for pair in toy_overrides(data_dir, *extra) for x in ("--set", pair)]
    command = [sys.executable, "-m", "translator", "train", "-c", str(CONFIGS / "tiny.yaml")]
    return [*command, "--run-dir", str(run), "--no-progress", *options, *sets]


def nan_logits_at_step(trainer, step: int) -> None:
    """The set-up `trainer`'s forward pass gives NaN logits at `step` (a diverging batch)."""
    forward = trainer.forward

    def forward_or_nan(src, tgt):
        logits = forward(src, tgt)
        return logits * float("nan") if trainer.state.step == step else logits

    trainer.forward = forward_or_nan


def invoke(*args, input=None):
    """`translator ARGS...` in this process, as a user types it (arguments become strings)."""
    from typer.testing import CliRunner

    from translator.cli.main import app

    return CliRunner().invoke(app, [str(a) for a in args], input=input)


def assert_one_line_error(result, code: int, text: str) -> None:
    """A CLI result that failed as a user expects: exit `code`, one `error:` line on stderr
    holding `text`, no traceback."""
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and text in lines[0], lines
    assert "Traceback" not in result.output


# A small model for tests of the model and the searches (untrained, deterministic per seed).
TINY = ModelConfig(
    d_model=32,
    n_heads=4,
    encoder_layers=2,
    decoder_layers=2,
    d_ff=64,
    dropout=0.0,
    activation_dropout=None,
    max_positions=64,
    share_all_embeddings=False,
)


requires_real_data = pytest.mark.skipif(
    not REAL_DATA or not Path(REAL_DATA, "train.en.gz").exists(),
    reason="set TRANSLATOR_DATA_DIR to the Multi30k folder to run this test",
)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def served(run: Path, env: dict, *options: str, startup_s: float = 60):
    """`translator serve --run RUN OPTIONS` on a free local port, until the block ends: its
    base URL. Fails the test with the server's output if it exits or never answers /health."""
    import urllib.request

    port = free_port()
    log = run.parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "translator", "serve", "--run", str(run)]
    command += ["--host", "127.0.0.1", "--port", str(port), *options]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup_s
        while True:
            if process.poll() is not None:
                output = log.read_text(errors="replace")
                pytest.fail(f"translator serve exited with {process.returncode}:\n{output}")
            try:
                with urllib.request.urlopen(base + "/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                output = log.read_text(errors="replace")
                pytest.fail(f"translator serve: no 200 from /health in {startup_s} s:\n{output}")
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
