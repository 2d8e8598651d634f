"""n-best reranking: teacher-forced scores, right-to-left and channel models, tuned weights."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import sacrebleu
from conftest import assert_one_line_error, invoke, tiny

from translator.decoding.rerank import (
    RerankSetup,
    RerankWeights,
    _bleu_statistics,
    choose,
    corpus_bleu,
    tune,
)
from translator.decoding.translator import Translator
from translator.training.trainer import Trainer

SOURCES = ["A dog runs in the park.", "Two girls play in the snow.", "The cat waits."]


def train(toy_data, path, *sets, steps=300):
    cfg = tiny(toy_data, f"train.max_steps={steps}", f"train.valid_every={steps}", *sets)
    return Trainer(cfg, run_dir=path, progress=False).train()


def test_log_likelihoods_are_the_scores_the_search_gives(toy_data, tmp_path):
    """Without a length penalty or shortlist, the beam's score of a hypothesis is the sum of
    its tokens' log-probabilities: the teacher-forced score must be the same number."""
    translator = Translator.load(train(toy_data, tmp_path / "run", steps=60))
    generated = {}  # each hypothesis's text -> the id sequences the search generated for it
    detokenize = translator._detokenize

    def recording(ids):
        generated.setdefault(text := detokenize(ids), set()).add(tuple(ids))
        return text

    translator._detokenize = recording
    nbest = translator.translate_nbest(SOURCES, nbest=3, length_penalty=0.0, shortlist=False)
    # Scoring reads text: a barely trained model's hypothesis such as "Park . ." reads back as
    # other tokens ("Park.."), so only those whose text gives back their own tokens are compared.
    flat = [
        (src, hyp, score)
        for src, hyps in zip(SOURCES, nbest)
        for hyp, score in hyps
        if generated[hyp] == {tuple(translator._encode_targets([hyp])[0])}
    ]
    assert len(flat) >= 6  # of 9
    scores, lengths = translator.log_likelihoods([f[0] for f in flat], [f[1] for f in flat])
    assert scores == pytest.approx([f[2] for f in flat], abs=1e-3)
    assert all(n >= 2 for n in lengths)  # tokens and <eos>
    # an ensemble scores with its members' mean probabilities: a model with itself, as alone
    pair = Translator.load(translator.run_dir, ensemble=[translator.run_dir])
    twice, _ = pair.log_likelihoods([f[0] for f in flat], [f[1] for f in flat])
    assert twice == pytest.approx(scores, abs=1e-4)


def test_a_right_to_left_run_learns_reversed_targets_and_writes_in_reading_order(
    toy_data, tmp_path
):
    run = train(toy_data, tmp_path / "r2l", "model.right_to_left=true")
    translator = Translator.load(run)
    assert translator.translate(["A dog runs in the park.", "The cat waits at the beach."]) == [
        "Ein Hund läuft im Park.",
        "Die Katze wartet am Strand.",
    ]
    # Its heatmap is in reading order too: the generation's rows reversed, <eos> still last.
    _, out, weights = translator.attention("A dog runs in the park.")
    assert out[:2] == ["Ein", "Hund"] and out[-1] == "<eos>" and weights.shape[-2] == len(out)
    raw = Translator.load(run)  # the same model, its rows as generated
    raw.cfg = replace(raw.cfg, model=replace(raw.cfg.model, right_to_left=False))
    _, generated, raw_weights = raw.attention("A dog runs in the park.")
    assert out[:-1] == generated[-2::-1]
    assert np.allclose(weights[:, 0], raw_weights[:, -2])
    assert np.allclose(weights[:, -1], raw_weights[:, -1])
    # It prefers the correct sentence to its reversal, which a left-to-right reading of
    # reversed targets would not.
    right, _ = translator.log_likelihoods(["A dog runs."], ["Ein Hund läuft."])
    wrong, _ = translator.log_likelihoods(["A dog runs."], [". läuft Hund Ein"])
    assert right[0] > wrong[0] + 5


def test_corpus_bleu_from_sentence_statistics_is_sacrebleus():
    lists = [
        [("Ein Hund läuft im Park.", 0.0), ("Ein Hund rennt im Park.", 0.0)],
        [("Zwei Mädchen spielen.", 0.0), ("Zwei Mädchen spielen im Schnee.", 0.0)],
        [("Die Katze.", 0.0)],
    ]
    refs = ["Ein Hund läuft im Park.", "Zwei Mädchen spielen im Schnee.", "Die Katze wartet."]
    stats = _bleu_statistics(lists, refs, "de")
    for chosen in ([0, 0, 0], [1, 1, 0], [0, 1, 0]):
        outputs = [lists[i][k][0] for i, k in enumerate(chosen)]
        expected = sacrebleu.BLEU(trg_lang="de").corpus_score(outputs, [refs]).score
        assert corpus_bleu(stats, np.array(chosen)) == pytest.approx(expected)
    # no 4-gram in common: sacreBLEU smooths, it is not 0
    lists = [[("Ein Hund läuft schnell weg", 0.0)], [("Die Katze", 0.0)]]
    refs = ["Ein Hund läuft weg", "Die Katze wartet"]
    expected = sacrebleu.BLEU(trg_lang="de").corpus_score([h[0][0] for h in lists], [refs]).score
    assert (
        0
        < corpus_bleu(_bleu_statistics(lists, refs, "de"), np.array([0, 0]))
        == (pytest.approx(expected))
    )


def test_choose_takes_the_best_weighted_sum_and_never_a_missing_candidate():
    features = np.array(
        [
            [[-1.0, -9.0, -2.0, 3.0], [-2.0, -1.0, -2.0, 3.0]],
            [[-1.0, -1.0, -1.0, 2.0], [-np.inf] * 4],  # one candidate only
        ]
    )
    forward = dict(forward=1.0, right_to_left=0.0, channel=0.0, length=0.0)
    assert choose(features, forward).tolist() == [0, 0]
    assert choose(features, {**forward, "right_to_left": 1.0}).tolist() == [1, 0]


def test_a_weights_file_finds_its_runs_from_any_working_directory(tmp_path, monkeypatch):
    (tmp_path / "runs" / "r2l").mkdir(parents=True)
    (tmp_path / "runs" / "deen").mkdir()
    monkeypatch.chdir(tmp_path)
    setup = RerankSetup(nbest=4, right_to_left=("runs/r2l",), channel=("runs/deen",))
    weights = dict(forward=1.0, right_to_left=0.5, channel=0.3, length=0.1)
    RerankWeights(setup, weights).save(Path("runs/a/rerank.json"))
    saved = json.loads((tmp_path / "runs/a/rerank.json").read_text())["setup"]
    assert saved["right_to_left"] == ["../r2l"] and saved["channel"] == ["../deen"]
    monkeypatch.chdir(tmp_path / "runs")  # elsewhere, and by another spelling of the file
    loaded = RerankWeights.load(Path("a/rerank.json"))
    assert [Path(run).resolve() for run in loaded.setup.runs] == [
        tmp_path / "runs/r2l",
        tmp_path / "runs/deen",
    ]
    assert loaded.weights == weights and loaded.setup.nbest == 4


class FakeReranker:
    """Candidates whose length feature tells the right one: tuning must find that. The last
    text has one candidate only."""

    setup = RerankSetup(nbest=2, right_to_left=("r2l",))
    scorers = {"right_to_left": None}

    def candidates(self, texts, progress=False):
        lists = [[("Ein Hund.", -1.0), ("Ein Hund läuft im Park.", -1.5)] for _ in texts]
        features = np.array([[[-1.0, -5.0, 0.0, 2.0], [-1.5, -5.0, 0.0, 5.0]]] * len(texts))
        lists[-1], features[-1, 1] = lists[-1][:1], -np.inf
        return lists, features


def test_tuning_finds_the_weights_that_raise_bleu():
    refs = ["Ein Hund läuft im Park."] * 3 + ["Ein Hund."]
    tuned = tune(FakeReranker(), ["A dog runs in the park."] * 4, refs)
    assert tuned.tuned["beam_bleu"] < tuned.tuned["bleu"] == 100.0
    assert tuned.weights["length"] > 0.5 / 3 and tuned.weights["channel"] == 0  # no model
    assert tuned.weights["forward"] == 1.0 and tuned.weights["right_to_left"] == 0  # no help


def test_tune_rerank_then_evaluate_and_translate_with_the_weights(toy_data, tmp_path):
    forward = train(toy_data, tmp_path / "fwd", steps=60)  # undertrained: room to rerank
    r2l = train(toy_data, tmp_path / "r2l", "model.right_to_left=true", steps=150)
    deen = train(toy_data, tmp_path / "deen", "data.src_lang=de", "data.tgt_lang=en", steps=150)
    result = invoke(
        "tune-rerank", "--run", forward, "--right-to-left", r2l, "--channel", deen,
        "--nbest", "4", "--split", "val", "--test", "test", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    saved = RerankWeights.load(forward / "rerank.json")
    assert report["weights"] == saved.weights and saved.setup.nbest == 4
    assert saved.setup.right_to_left == (str(r2l),) and saved.setup.channel == (str(deen),)
    assert saved.tuned["bleu"] >= saved.tuned["beam_bleu"]  # the grid holds the beam's choice
    assert (saved.setup.alpha, saved.setup.shortlist) == (0.6, True)  # configs/tiny.yaml's
    (test,) = report["tests"].values()
    assert 0 <= test["p_bootstrap"] <= 1 and test["sentences"] == 40
    assert {"bleu", "chrf", "bleu_tok_lc"} <= set(test["reranked"])

    # --rerank gives the candidate of highest weighted score, from the same n-best
    translator = Translator.load(forward)
    expected = translator.translate(SOURCES, rerank=str(forward / "rerank.json"))
    from translator.decoding.rerank import Reranker

    reranker = Reranker(translator, saved.setup, Translator.load)
    lists, features = reranker.candidates(SOURCES)
    chosen = choose(features, saved.weights)
    assert expected == [hyps[k][0] for hyps, k in zip(lists, chosen)]
    out = invoke("translate", *SOURCES, "--run", forward, "--rerank", forward / "rerank.json")
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == expected and "reranked by" in out.stderr
    scored = invoke("evaluate", "--run", forward, "--rerank", forward / "rerank.json", "--json")
    assert scored.exit_code == 0, scored.output
    assert json.loads(scored.stdout)["decode"]["rerank"] == str(forward / "rerank.json")

    # what cannot work says so in one line
    assert_one_line_error(
        invoke("translate", "A dog.", "--run", forward, "--rerank", tmp_path / "none.json"),
        1, "no reranking weights at",
    )  # fmt: skip
    assert_one_line_error(
        invoke("translate", "A dog.", "--run", forward, "--rerank", forward / "rerank.json",
               "--mbr", "chrf"),
        2, "both choose from the n-best",
    )  # fmt: skip
    assert_one_line_error(
        invoke("tune-rerank", "--run", forward, "--channel", r2l), 1, "not de->en"
    )
    assert_one_line_error(
        invoke("tune-rerank", "--run", forward, "--right-to-left", deen), 1, "de->en, not en->de"
    )
    assert_one_line_error(
        invoke("tune-rerank", "--run", forward, "--right-to-left", forward), 1, "is not a right-"
    )
    assert_one_line_error(invoke("tune-rerank", "--run", forward), 2, "--right-to-left RUN")
    assert_one_line_error(
        invoke("evaluate", "--run", forward, "--rerank", forward / "rerank.json", "--beam", 3),
        2, "tuned with: drop --beam",
    )  # fmt: skip
    assert_one_line_error(
        invoke("translate", "A dog.", "--run", forward, "--rerank", forward / "rerank.json",
               "--nbest", 2),
        2, "--nbest shows the beam's",
    )  # fmt: skip
    assert_one_line_error(
        invoke("translate", "A dog.", "--run", forward, "--ensemble", r2l), 1, "opposite directions"
    )
