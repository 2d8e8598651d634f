"""Minimum Bayes risk decoding: the hypothesis the rest of the n-best agrees with most."""

import numpy as np
import pytest
import sacrebleu
from conftest import assert_one_line_error, invoke, tiny

from translator.decoding.mbr import expected_utilities, mbr_choice
from translator.decoding.translator import Translator
from translator.training.trainer import Trainer

NBEST = [
    ("Zwei Hunde spielen im Schnee.", -0.50),  # the beam's best, alone in its wording
    ("Zwei Hunde rennen durch den Schnee.", -0.55),
    ("Zwei Hunde rennen im Schnee.", -0.60),
    ("Zwei Hunde rennen durch Schnee.", -0.62),
]


@pytest.mark.parametrize("utility", ["chrf", "bleu"])
def test_mbr_picks_what_the_others_agree_with_not_the_top_score(utility):
    assert "rennen" in mbr_choice(NBEST, utility)  # three of four say so; the best does not
    # probabilities weigh the votes: a hypothesis the model is sure of wins
    sure = [(NBEST[0][0], 0.0)] + [(text, -20.0) for text, _ in NBEST[1:]]
    assert mbr_choice(sure, utility) == NBEST[0][0]
    assert mbr_choice(NBEST[:1], utility) == NBEST[0][0]
    with pytest.raises(ValueError, match="unknown MBR utility"):
        mbr_choice(NBEST, "ter")


def test_expected_chrf_is_sacrebleus_sentence_chrf_weighted_by_the_model():
    hyps = [("Zwei Hunde spielen im Schnee.", -0.5), ("Zwei Hunde rennen im Schnee.", -0.6)]
    hyps += [("Zwei Hunde rennen durch Schnee.", -0.7), ("", -0.9)]  # an empty one scores 0
    chrf = sacrebleu.CHRF()
    p = np.exp([s for _, s in hyps]) / np.exp([s for _, s in hyps]).sum()
    expected = [
        sum(w * chrf.sentence_score(h, [r]).score for (r, _), w in zip(hyps, p)) for h, _ in hyps
    ]
    assert expected_utilities(hyps, "chrf") == pytest.approx(expected, abs=1e-9)


def test_translate_and_evaluate_take_mbr(toy_data, tmp_path):
    cfg = tiny(toy_data, "train.max_steps=40", "train.valid_every=40")
    run = Trainer(cfg, run_dir=tmp_path / "run", progress=False).train()
    sources = ["A dog runs in the park.", "Two girls play in the snow.", "The cat waits."]
    translator = Translator.load(run)
    nbest = translator.translate_nbest(sources, beam_size=4, nbest=4)
    expected = [mbr_choice(hyps, "chrf") for hyps in nbest]
    assert translator.translate(sources, beam_size=4, mbr="chrf") == expected
    result = invoke("translate", *sources, "--run", run, "--beam", "4", "--mbr", "chrf")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == expected and "MBR by chrf" in result.stderr
    assert_one_line_error(
        invoke("translate", "A dog.", "--run", run, "--mbr", "ter"), 2, "decode.mbr must be"
    )
