"""CTranslate2 export: the exported model translates as ours does, for every model layout."""

import json

import pytest
from conftest import TOY_BPE, toy_overrides, toy_pairs
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from translator.cli.main import app
from translator.decoding.ct2_export import export
from translator.decoding.translator import Translator
from translator.model.weights import load_run
from translator.serving.app import create_app

pytest.importorskip("ctranslate2")
runner = CliRunner()
SOURCES = [en for en, _ in toy_pairs(60, seed=7)] + ["A dog", "Two girls play in the snow at"]


def train(data, run_dir, *extra):
    overrides = toy_overrides(data, "train.max_steps=60", "model.d_model=64", "model.d_ff=128")
    sets = [x for pair in [*overrides, *extra] for x in ("--set", pair)]
    result = runner.invoke(
        app, ["train", "-c", "configs/tiny.yaml", "--run-dir", str(run_dir), "--no-progress", *sets]
    )
    assert result.exit_code == 0, result.output
    return run_dir


@pytest.mark.parametrize(
    "layout",
    [
        # word vocabularies, post-norm, sinusoidal positions, tied target embeddings
        ("model.norm=post",),
        TOY_BPE,  # joint BPE, all embeddings shared, pre-norm: the default config's scheme
        ("model.norm=pre", "model.positions=learned", "model.tie_target_embeddings=false"),
    ],
    ids=["words-post-norm", "joint-bpe-shared", "pre-norm-learned-untied"],
)
def test_the_float32_export_translates_exactly_as_ours(toy_data, tmp_path, layout):
    run = train(toy_data, tmp_path / "run", *layout)
    export(load_run(run), "model.safetensors", run / "ct2")
    ours, theirs = Translator.load(run), Translator.load(run, engine="ctranslate2")
    assert theirs.engine == "ctranslate2" and theirs.quantization == "float32"
    greedy = ours.translate(SOURCES, beam_size=1)
    assert theirs.translate(SOURCES, beam_size=1) == greedy  # 100% identical
    # The run's shortlist is CTranslate2's vocabulary map: both score the same tokens.
    assert (run / "ct2" / "vmap.txt").exists() and theirs.has_shortlist
    full = ours.translate(SOURCES, beam_size=1, shortlist=False)
    assert theirs.translate(SOURCES, beam_size=1, shortlist=False) == full
    # One ranking: GNMT's length penalty in both engines (CTranslate2's own is |Y|^alpha), and a
    # hypothesis cut by its length limit ends with the <eos> our search forces there. The same
    # hypothesis gets the same score (to float32 noise, and to the little probability this
    # barely trained model gives <pad>/<sos>, which the engines leave out at different points:
    # up to 0.011 seen, CTranslate2's the lower); the searches stop by slightly different
    # rules (ours at k finished hypotheses), so nearly all best outputs agree.
    # A cut hypothesis is scored by CTranslate2's score_batch, which cannot leave out <pad> and
    # <sos> as the searches do: this barely trained model gives them a few percent (a trained
    # one, nothing). Without its <eos>, or with |Y|^alpha, the score would be far off.
    for options, tolerance in (
        (dict(length_penalty=1.5), dict(abs=2e-2)),  # GNMT vs |Y|^alpha: 0.1 to 0.3 apart
        (dict(max_len=3, length_penalty=0.6), dict(rel=5e-2)),
    ):
        ranked = [
            engine.translate_nbest(SOURCES, nbest=3, beam_size=4, shortlist=False, **options)
            for engine in (ours, theirs)
        ]
        agree = sum(a[0][0] == b[0][0] for a, b in zip(*ranked, strict=True))
        assert agree >= 0.9 * len(SOURCES), (options, agree)
        for a, b in zip(*ranked, strict=True):
            a, b = dict(a), dict(b)
            assert {t: a[t] for t in a.keys() & b.keys()} == pytest.approx(
                {t: b[t] for t in a.keys() & b.keys()}, **tolerance
            )
            if "max_len" in options:
                assert all(len(text.split()) <= 3 for text in b)
    # With the shortlist, a beam cut by its limit is scored over the whole vocabulary by
    # CTranslate2 (score_batch has no vocabulary map), over the shortlist by ours: a barely
    # trained model's cut beams then rank a little differently; the rest is the same.
    beams = [engine.translate(SOURCES, beam_size=4) for engine in (ours, theirs)]
    assert sum(a == b for a, b in zip(*beams, strict=True)) >= 0.9 * len(SOURCES)
    one = theirs.translate_nbest(SOURCES, nbest=1, beam_size=3)  # (raised a zip() error)
    assert [hyps[0][0] for hyps in one] == theirs.translate(SOURCES, beam_size=3)


def test_export_command_writes_a_self_contained_folder_and_checks_parity(toy_data, tmp_path):
    run = train(toy_data, tmp_path / "run", *TOY_BPE)
    result = runner.invoke(app, ["export", "--run", str(run), "--quantization", "int8"])
    assert result.exit_code == 0, result.output
    assert "CTranslate2 int8" in result.stdout and "identical outputs:" in result.stdout
    assert result.stdout.count("BLEU") == 2  # torch and ctranslate2, side by side
    # int8 quantization works on copies: the torch model the check decodes is left intact
    same = float(result.stdout.split("identical outputs:")[1].split("%")[0])
    assert same >= 50, result.stdout
    folder = run / "ct2"
    names = {path.name for path in folder.iterdir()}
    assert {"model.bin", "config.json", "config.yaml", "subword.json", "translator.json"} <= names
    info = json.loads((folder / "translator.json").read_text(encoding="utf-8"))
    assert info["quantization"] == "int8" and info["weights"] == "model.safetensors"
    assert len(info["weights_sha256"]) == 64

    # The engine option of translate, evaluate and serve.
    result = runner.invoke(
        app, ["translate", "--run", str(run), "--engine", "ctranslate2", "A dog."]
    )
    assert result.exit_code == 0 and "ctranslate2 int8" in result.stderr, result.output
    result = runner.invoke(
        app, ["evaluate", "--run", str(run), "--engine", "ctranslate2", "--split", "val", "--json"]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.splitlines()[-1])["engine"] == "ctranslate2"
    translator = Translator.load(run, engine="ctranslate2")
    with TestClient(create_app(translator)) as client:
        assert client.get("/v1/info").json()["engine"] == "ctranslate2"
        answer = client.post("/v1/translate", json={"text": "A dog runs.", "attention": True})
        (attention,) = answer.json()["translations"][0]["attention"]
        assert len(attention["weights"]) == len(attention["target"])
        assert all(len(row) == len(attention["source"]) for row in attention["weights"])

    # Exporting again replaces the folder whole; the weights an export holds are said.
    result = runner.invoke(app, ["export", "--run", str(run), "--no-check"])
    assert result.exit_code == 0 and "identical" not in result.stdout
    assert json.loads((folder / "translator.json").read_text())["quantization"] == "float32"
    result = runner.invoke(
        app,
        ["translate", "A dog.", "--run", str(run), "--engine", "ctranslate2"]
        + ["--weights", "last.safetensors"],
    )
    assert result.exit_code == 1 and "exported from model.safetensors" in result.stderr


def test_engine_errors_are_one_line(toy_data, tmp_path):
    run = train(toy_data, tmp_path / "run")
    for args, code, text in (
        (["translate", "A dog.", "--engine", "ct2"], 2, "--engine must be torch or ctranslate2"),
        (["translate", "A dog.", "--engine", "ctranslate2"], 1, "translator export --run"),
        (["export", "--quantization", "int3"], 2, "--quantization must be one of"),
        (["export", "--format", "onnx"], 2, "--format must be ctranslate2"),
        (["translate", "A dog.", "--engine", "ctranslate2", "-e", str(run)], 1, "drop --ensemble"),
    ):
        result = runner.invoke(app, [*args, "--run", str(run)])
        assert result.exit_code == code, (args, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and text in lines[0], lines
