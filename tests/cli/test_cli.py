"""The command line as a user meets it: help, one-line errors, exit codes, a tiny full pipeline."""

import json
import shutil

import pytest
from conftest import (
    REAL_DATA,
    assert_one_line_error,
    invoke,
    requires_real_data,
    toy_overrides,
)

from translator.run_dir import latest_run


def sets(data_dir, *extra):
    return [x for pair in toy_overrides(data_dir, *extra) for x in ("--set", pair)]


def test_help_lists_every_command():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("prepare", "train", "translate", "evaluate"):
        assert command in result.output
        sub = invoke(command, "--help")
        assert sub.exit_code == 0 and "Usage" in sub.output


@pytest.mark.parametrize(
    "args, text",
    [
        (["prepare", "--config", "nope.yaml"], "config file not found: nope.yaml"),
        (["prepare", "--set", "model.heads=3"], "unknown key model.heads"),
        (["prepare", "--set", "model.d_model=abc"], "--set model.d_model=abc: must be int"),
        (["prepare", "--set", "model.d_model=-1"], "--set model.d_model=-1: must be > 0, got -1"),
        (["prepare", "--set", "data.source=ftp"], "--set data.source=ftp: must be one of"),
        (["prepare", "--set", "oops"], "--set expects KEY=VALUE"),
        (["train", "--set", "model.n_heads=7"], "must be divisible by model.n_heads"),
    ],
)
def test_config_errors_exit_2_with_one_line(args, text):
    assert_one_line_error(invoke(*args), 2, text)


def test_missing_data_is_one_line(tmp_path, monkeypatch):
    import urllib.error

    from translator.data import multi30k as data

    def offline(url, timeout):
        raise urllib.error.URLError("offline")

    monkeypatch.setattr(data.urllib.request, "urlopen", offline)
    result = invoke("prepare", "--set", f"data.dir={tmp_path}")
    names = "train.en.gz, train.de.gz, val.en.gz, val.de.gz, test_2016_flickr.en.gz"
    assert_one_line_error(result, 1, f"Multi30k files missing from {tmp_path}: {names}")


def test_an_unknown_split_is_a_bad_argument(toy_data):
    assert_one_line_error(invoke("prepare", "--set", "data.test_split=test2019"), 2, "test2019")
    result = invoke("train", "-c", "configs/tiny.yaml", *sets(toy_data, "train.max_steps=2"))
    assert result.exit_code == 0, result.output
    assert_one_line_error(invoke("evaluate", "--split", "foo"), 2, "unknown split 'foo'")
    assert_one_line_error(invoke("evaluate", "--src", "x.en"), 2, "--src and --ref go together")


@pytest.mark.parametrize(
    "args, text",
    [
        (["evaluate", "--alpah", "1"], "evaluate`; did you mean --alpha? (see `"),
        (["train", "--resum"], "did you mean --resume?"),
        (["evaluate", "--beam"], "Option '--beam' requires an argument."),
        (["frob"], "No such command 'frob'."),
    ],
)  # fmt: skip
def test_usage_errors_are_one_line_with_the_closest_option(args, text):
    assert_one_line_error(invoke(*args), 2, text)


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.stdout.startswith("translator ")


def test_translate_without_any_run(tmp_path):
    assert_one_line_error(invoke("translate", "A dog."), 1, "no trained run found")
    assert_one_line_error(
        invoke("translate", "--run", tmp_path / "x", "A dog."), 1, "does not exist"
    )


def test_the_whole_pipeline_on_a_toy_corpus(toy_data, tmp_path):
    result = invoke("prepare", "-c", "configs/tiny.yaml", *sets(toy_data))
    assert result.exit_code == 0, result.output
    assert "train" in result.output and "400" in result.output and "padding" in result.output

    result = invoke(
        "train",
        "-c",
        "configs/tiny.yaml",
        "--no-progress",
        *sets(toy_data, "train.max_steps=60", "model.d_model=64", "model.d_ff=128"),
    )
    assert result.exit_code == 0, result.output

    result = invoke("translate", "A dog runs in the park.", "Two girls sleep at the beach.")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and all(line.strip() for line in lines)

    source = tmp_path / "in.en"
    source.write_text("A man waits.\n\nThe cat plays on the street.\n", encoding="utf-8")
    out = tmp_path / "out.de"
    result = invoke("translate", "--input", source, "--output", out, "--greedy")
    assert result.exit_code == 0, result.output
    translated = out.read_text(encoding="utf-8").split("\n")
    assert len(translated) == 4 and translated[1] == "" and translated[0] and translated[2]

    result = invoke("translate", "--input", "-", input="A dog sleeps.\n")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1

    result = invoke("evaluate", "--bleu", "--split", "val", "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"bleu", "chrf", "signature", "n", "seconds", "bleu_tok_lc"} <= set(scores)
    assert scores["n"] == 40 and 0 <= scores["bleu"] <= 100
    assert scores["lowercased_references"] is False  # a cased run is scored as cased

    # A run ensembled with itself averages two equal distributions: the same translations.
    run = latest_run()
    result = invoke("evaluate", "--split", "val", "--json", "--ensemble", run)
    assert result.exit_code == 0, result.output
    both = json.loads(result.stdout.strip().splitlines()[-1])
    assert both["models"] == 2 and (both["bleu"], both["chrf"]) == (scores["bleu"], scores["chrf"])
    other = tmp_path / "other-run"
    shutil.copytree(run, other)
    vocab = json.loads((other / "vocab.tgt.json").read_text(encoding="utf-8"))
    tokens = vocab["tokens"]  # the same words under other ids: two swapped
    tokens[-1], tokens[-2] = tokens[-2], tokens[-1]
    (other / "vocab.tgt.json").write_text(json.dumps(vocab), encoding="utf-8")
    assert_one_line_error(
        invoke("translate", "A dog.", "--ensemble", other), 1, "different vocabularies"
    )
    assert_one_line_error(
        invoke("translate", "A dog.", "--ensemble", tmp_path / "none"), 1, "does not exist"
    )
    assert_one_line_error(
        invoke("translate", "A dog.", "-e", run, "--plot-attention", tmp_path / "a.png"),
        2,
        "drop --ensemble",
    )

    result = invoke("translate", "A dog runs.", "", "--nbest", "2", "--beam", "3")
    assert result.exit_code == 0, result.output
    blocks = result.stdout.split("\n\n")
    best, second = (line.split("\t") for line in blocks[0].splitlines())
    assert float(best[1]) >= float(second[1]) and best[0] != second[0]
    assert len(blocks) == 2 and blocks[1].strip() == ""  # the empty input gives an empty block

    plot = tmp_path / "attention.png"
    result = invoke("translate", "A woman plays in the snow.", "--plot-attention", plot)
    assert result.exit_code == 0, result.output
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    result = invoke("evaluate", "--split", "val", "--lowercase", "--beam", "1", "--confidence")
    assert result.exit_code == 0, result.output
    assert "case:lc" in result.stdout and "tokenized, lowercased" in result.stdout
    assert result.stdout.count(" ± ") == 3 and "bs:1000" in result.stdout  # three BLEU lines

    assert_one_line_error(
        invoke("translate", "A dog.", "--beam", "0"), 2, "--beam must be at least 1, got 0"
    )
    assert_one_line_error(
        invoke("translate", "A dog.", "--max-len", "0"), 2, "--max-len must be at least 1"
    )
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9\n".encode("latin-1"))
    assert_one_line_error(invoke("translate", "--input", bad), 1, "not valid UTF-8")
    assert_one_line_error(invoke("evaluate", "--src", source), 2, "--src and --ref go together")
    assert_one_line_error(invoke("translate", "--input", tmp_path), 1, "is a directory")
    assert_one_line_error(
        invoke("translate", "--input", tmp_path / "none.txt"), 1, "does not exist"
    )


def test_a_lowercasing_run_is_scored_against_lowercased_references(toy_data, tmp_path):
    from translator.data.multi30k import read_lines
    from translator.decoding.scoring import score

    overrides = ("data.lowercase=true", "train.max_steps=60", "model.d_model=64", "model.d_ff=128")
    train = invoke("train", "-c", "configs/tiny.yaml", "--no-progress", *sets(toy_data, *overrides))
    assert train.exit_code == 0, train.output

    out = tmp_path / "val.hyp"
    result = invoke("evaluate", "--split", "val", "--beam", "1", "--json", "--output", out)
    assert result.exit_code == 0, result.output
    reported = json.loads(result.stdout.strip().splitlines()[-1])
    hyps, refs = read_lines(out), read_lines(toy_data / "val.de.gz")
    assert any(hyps) and all(hyp == hyp.lower() for hyp in hyps)
    lowered = score(hyps, [ref.lower() for ref in refs])
    assert (reported["bleu"], reported["chrf"]) == (lowered["bleu"], lowered["chrf"])
    assert reported["lowercased_references"] is True
    # Against the cased references the same output would look worse: German capitalises nouns.
    assert score(hyps, refs)["chrf"] < reported["chrf"]

    result = invoke("evaluate", "--split", "val", "--beam", "1")
    assert "scored against lowercased references" in result.stdout


@requires_real_data
def test_prepare_on_the_real_data():
    result = invoke("prepare", "--set", f"data.dir={REAL_DATA}")
    assert result.exit_code == 0, result.output
    assert "29,000" in result.output and "1,014" in result.output and "OOV" in result.output


def test_translate_and_evaluate_say_what_decodes_and_warn_of_an_untrained_run(toy_data):
    result = invoke("train", "-c", "configs/tiny.yaml", *sets(toy_data, "train.max_steps=3"))
    assert result.exit_code == 0, result.output
    run = latest_run()

    result = invoke("translate", "A dog runs.", "--greedy")
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 1, result.output
    assert f"run {run} (model.safetensors): greedy" in result.stderr
    assert "warning: this run is barely trained: best val BLEU 0." in result.stderr

    result = invoke("evaluate", "--split", "val", "--json", "--beam", "2", "--alpha", "1")
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert (scores["run"], scores["weights"], scores["ensemble"]) == (
        str(run),
        "model.safetensors",
        [],
    )
    assert (scores["beam"], scores["alpha"]) == (2, 1.0)
    result = invoke("evaluate", "--split", "val", "--weights", "last.safetensors")
    assert f"run {run} (last.safetensors): beam 2, alpha 0.6" in result.stdout


def test_translate_and_evaluate_share_every_decoding_option(toy_data, tmp_path):
    result = invoke("train", "-c", "configs/tiny.yaml", *sets(toy_data, "train.max_steps=3"))
    assert result.exit_code == 0, result.output
    run = latest_run()
    inputs = ["A dog runs.", "Two men talk in the park.", "A girl sleeps."]

    def translate(*options):
        result = invoke("translate", *inputs, "--weights", "last.safetensors", *options)
        assert result.exit_code == 0, result.output
        return result

    wide = translate("--beam", "3", "--alpha", "1.2", "--max-len", "4", "--threads", "2")
    assert f"run {run} (last.safetensors): beam 3, alpha 1.2, at most 4 tokens" in wide.stderr
    assert all(len(line.split()) <= 4 for line in wide.stdout.splitlines())
    # The batch size changes how sentences are grouped, never what they translate to.
    assert translate("--greedy", "--batch-size", "1").stdout == translate("--greedy").stdout

    result = invoke("evaluate", "--bleu", "--split", "val", "--json", "--greedy", "--threads", "1")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    assert scores["beam"] == 1 and scores["decode"]["threads"] == 1
    # What made the run, as its config.yaml records it (a run's config still loads with it).
    import importlib.metadata

    made_with = scores["versions"]
    for package in ("torch", "tokenizers", "spacy", "datasets"):
        assert made_with[package] == importlib.metadata.version(package)
    assert "versions:" in (run / "config.yaml").read_text()
    assert scores["decode"]["length_penalty"] == scores["alpha"]

    for command in (["translate", "A dog."], ["evaluate", "--split", "val"]):
        assert_one_line_error(invoke(*command, "--greedy", "--beam", "3"), 2, "drop one")
        assert_one_line_error(invoke(*command, "--threads", "0"), 2, "--threads must be")
        assert_one_line_error(invoke(*command, "--batch-size", "0"), 2, "--batch-size must")
        assert_one_line_error(invoke(*command, "--alpha", "-1"), 2, "--alpha must be >= 0")

    # The Python API takes the same options, checked the same way.
    from translator.config import ConfigError
    from translator.decoding.translator import Translator

    translator = Translator.load(run, weights="last.safetensors")
    assert translator.translate(inputs, beam_size=3, length_penalty=1.2, max_len=4) == (
        wide.stdout.splitlines()
    )
    with pytest.raises(ConfigError, match="decode.length_penalty must be >= 0"):
        translator.translate(inputs, length_penalty=-1)
    with pytest.raises(TypeError):
        translator.translate(inputs, beam=3)  # not an option: a typo is not silently ignored


def test_a_run_decodes_with_its_shortlist_unless_told_not_to(toy_data):
    from translator.data.bundle import read_bundle
    from translator.decoding.translator import Translator

    result = invoke("train", "-c", "configs/tiny.yaml", *sets(toy_data, "train.max_steps=3"))
    assert result.exit_code == 0, result.output
    run = latest_run()
    shortlist = read_bundle(run).shortlist  # learned by prepare, kept in the run dir
    assert shortlist is not None and (run / "shortlist.safetensors").exists()

    on = invoke("translate", "A dog runs.", "--beam", "2")
    off = invoke("translate", "A dog runs.", "--beam", "2", "--no-shortlist")
    assert on.exit_code == off.exit_code == 0, on.output + off.output
    assert "(model.safetensors): beam 2, alpha 0.6, shortlist\n" in on.stderr
    assert "shortlist" not in off.stderr
    translator = Translator.load(run)
    (ids,) = translator._encode(["A dog runs."])
    allowed = {translator.tgt_vocab.itos[i] for i in shortlist.targets([ids])}
    assert set(on.stdout.replace(".", " .").split()) <= allowed  # a barely trained model
    import numpy as np

    from translator.config import DecodeConfig
    from translator.data.shortlist import Shortlist

    few = ["<unk>", "<eos>", "￭.", "Ein", "und", "im"]
    stoi = translator.tgt_vocab.stoi
    always = np.array(sorted(stoi[t] for t in few if t in stoi), dtype=np.int32)
    # One sentence alone may say the whole union: no per-sentence mask to pay for at each step.
    (other,) = translator._encode(["Two women sit on a red bench in the park."])
    mine = next(i for i in ids if i not in other)
    candidates = np.full_like(shortlist.candidates, -1)
    candidates[mine, 0] = next(t for t in range(len(stoi)) if t not in always)  # its own only
    translator.shortlist = Shortlist(candidates, always)
    assert translator._shortlist([ids], DecodeConfig())[1] is None
    own = translator._shortlist([ids, other], DecodeConfig())[1]
    assert own is not None and own[0].all() and not own[1].all()

    # A shortlist of a few tokens is all either search may say; without it, the model's words.
    translator.shortlist = Shortlist(np.full_like(shortlist.candidates, -1), always)
    for beam in (1, 3):
        (short,) = translator.translate(["A dog runs."], beam_size=beam)
        assert set(short.replace(".", " ").split()) <= {"Ein", "und", "im"}
        (full,) = translator.translate(["A dog runs."], beam_size=beam, shortlist=False)
        assert set(full.replace(".", " ").split()) - {"Ein", "und", "im"}

    for flag, used in (("--shortlist", True), ("--no-shortlist", False)):
        result = invoke("evaluate", "--split", "val", "--json", "--greedy", flag)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout.strip().splitlines()[-1])["shortlist"] is used


def test_a_bug_is_called_an_internal_error_not_passed_off_as_a_user_error(monkeypatch):
    from translator.decoding.translator import Translator

    def broken(*args, **kwargs):
        raise ValueError("could not broadcast shapes (3,) and (4,)")  # a bug, not the user's

    monkeypatch.setattr(Translator, "load", broken)
    assert_one_line_error(
        invoke("translate", "A dog."), 1, "internal error (ValueError: could not broadcast"
    )
    assert "TRANSLATOR_DEBUG=1" in invoke("translate", "A dog.").stderr
    monkeypatch.setenv("TRANSLATOR_DEBUG", "1")
    result = invoke("translate", "A dog.")
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)  # the traceback


def test_the_executable_exits_quickly_with_its_output_whole_and_its_exit_code(toy_data, tmp_path):
    """translate and evaluate skip Python's finalization (0.4 s with torch loaded): what they
    printed must still all be there, and their exit codes must be kept."""
    import subprocess
    import sys

    result = invoke("train", "-c", "configs/tiny.yaml", *sets(toy_data, "train.max_steps=3"))
    assert result.exit_code == 0, result.output
    run = latest_run()
    lines = [f"A dog runs {i}." for i in range(300)]
    source = tmp_path / "in.en"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    command = [sys.executable, "-m", "translator", "translate", "--run", str(run)]
    with open(tmp_path / "out.de", "w") as out:
        done = subprocess.run([*command, "--input", str(source), "--greedy"], stdout=out)
    assert done.returncode == 0
    assert len((tmp_path / "out.de").read_text(encoding="utf-8").splitlines()) == 300
    done = subprocess.run([*command, "--beam", "0", "A dog."], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.startswith("error: --beam must be at least 1")
    done = subprocess.run(
        [sys.executable, "-m", "translator", "evaluate", "--run", str(run), "--split", "nope"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2 and "nope" in done.stderr


def test_prepare_check_finds_two_fresh_prepares_byte_identical(toy_data):
    """The same files and settings give the same BPE, vocabularies and ids in any process (the
    BPE trainer numbered symbols in hash-map order, so they did not): two users, or the
    machines of one torchrun job, get one run's ids."""
    from conftest import TOY_BPE

    result = invoke("prepare", "-c", "tiny", *sets(toy_data, *TOY_BPE), "--check")
    assert result.exit_code == 0, result.output
    assert "reproducible: two fresh prepares" in result.stdout
    # BPE, 2 vocabularies, 12 ids files, meta.json (its timings aside)
    assert "the same 17 files, byte for byte" in result.stdout


def test_prepare_check_names_the_files_that_differ(tmp_path, monkeypatch, capsys):
    import shutil
    import subprocess

    import typer

    from translator.cli.prepare import _check_reproducible

    def fake_prepare(command, env, **_):  # writes what a prepare would, one file seed-dependent
        cache = next(x.split("=", 1)[1] for x in command if x.startswith("data.cache_dir="))
        made = tmp_path / env["PYTHONHASHSEED"]
        made.mkdir()
        (made / "vocab.src.json").write_text("[]")
        (made / "subword.json").write_text(env["PYTHONHASHSEED"])
        timings = {"seconds": {"learn": float(env["PYTHONHASHSEED"])}}  # never compared
        (made / "meta.json").write_text(json.dumps({"vocab_pairs": 9, **timings}))
        shutil.copytree(made, f"{cache}/key")
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_prepare)
    with pytest.raises(typer.Exit) as stopped:
        _check_reproducible(None, [], None)
    assert stopped.value.exit_code == 1
    error = capsys.readouterr().err.strip()
    assert error == "error: not reproducible: two fresh prepares differ in subword.json"


def test_synthesize_writes_a_corpus_that_training_can_add(toy_data, tmp_path):
    """`synthesize` translates the run's training split into OUT.en.gz (its sentences) and
    OUT.de.gz (their translations); `data.extra_train=OUT` adds those pairs to training."""
    import gzip

    from translator.data.multi30k import read_lines

    result = invoke("train", "-c", "configs/tiny.yaml", *sets(toy_data, "train.max_steps=3"))
    assert result.exit_code == 0, result.output
    out = tmp_path / "synthetic" / "forward"
    result = invoke("synthesize", "--out", str(out), "--greedy", "--max-len", "5")
    assert result.exit_code == 0, result.output
    sources = gzip.decompress((tmp_path / "synthetic/forward.en.gz").read_bytes()).decode()
    translations = read_lines(tmp_path / "synthetic/forward.de.gz")
    assert sources.splitlines() == read_lines(toy_data / "train.en.gz")
    assert len(translations) == 400 and all(len(t.split()) <= 5 for t in translations)
    assert "wrote 400 pairs" in result.stderr and "greedy" in result.stderr

    result = invoke("prepare", "-c", "configs/tiny.yaml",
                    *sets(toy_data, f"data.extra_train={out}"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "read 800 pairs (400 of them from data.extra_train: forward 400)" in result.output

    assert_one_line_error(invoke("synthesize", "--out", str(out), "--split", "nope"), 2, "nope")
