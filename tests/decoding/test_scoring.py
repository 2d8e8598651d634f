"""Scoring: sacreBLEU figures, the Multi30k papers' tokenized lowercased BLEU, confidence."""

import gzip
from pathlib import Path

import pytest
from conftest import REAL_DATA, requires_real_data

from translator.decoding.scoring import moses_lowercased, score

REFS = [
    "Ein Hund rennt durch den Schnee.",
    "Zwei Männer spielen Fußball auf einer Wiese.",
    "Eine Frau mit rotem Hut liest ein Buch.",
    "Kinder spielen im Park neben einem See.",
] * 10


def test_perfect_output_scores_100():
    result = score(REFS, REFS)
    assert result["bleu"] == 100 and result["chrf"] == 100 and result["bleu_tok_lc"] == 100
    assert result["n"] == len(REFS) and "tok:13a" in result["signature"]


def test_papers_convention_ignores_case_and_tokenization():
    hyps = [ref.lower().replace(".", " .") for ref in REFS]
    result = score(hyps, REFS, lowercase=True)
    assert result["bleu"] < 60  # cased sacreBLEU sees every capital as an error ...
    assert result["bleu_lc"] == 100 and result["bleu_tok_lc"] == 100  # ... the others do not


def test_bootstrap_adds_confidence_without_moving_the_score():
    hyps = [ref.replace("Hund", "Katze").replace("einer", "der") for ref in REFS]
    plain = score(hyps, REFS, lowercase=True)
    resampled = score(hyps, REFS, lowercase=True, bootstrap=200)
    for key in ("bleu", "bleu_lc", "bleu_tok_lc"):
        assert resampled[key] == plain[key] and key + "_ci" not in plain
        assert 0 < resampled[key + "_ci"] < 20
    assert "bs:200" in resampled["signature"]


def test_mismatched_lengths_fail():
    with pytest.raises(ValueError, match="3 hypotheses but 40 references"):
        score(REFS[:3], REFS)


def test_bleu_tokenizes_by_the_target_language():
    # Chinese has no spaces: 13a would see one "word" per sentence and score 0 for a near miss.
    chinese = score(["我们爱猫。"], ["我们爱狗。"], tgt_lang="zh")
    assert "tok:zh" in chinese["signature"] and chinese["bleu"] > 0
    assert "tok:13a" in score(["Ein Hund."], ["Ein Hund."], tgt_lang="de")["signature"]


@requires_real_data
@pytest.mark.parametrize("split", ["val", "test_2016_flickr"])
@pytest.mark.parametrize("lang", ["de", "en"])
def test_the_papers_text_is_byte_identical_to_the_official_tokenized_files(split, lang):
    official = Path(REAL_DATA).parent / "multi30k-tok" / f"{split}.lc.norm.tok.{lang}"
    if not official.exists():
        pytest.skip(f"the official tokenized files are not beside the data ({official})")
    with gzip.open(Path(REAL_DATA) / f"{split}.{lang}.gz", "rt", encoding="utf-8") as f:
        raw = f.read().splitlines()
    ours = moses_lowercased(raw, lang)
    theirs = official.read_text(encoding="utf-8").splitlines()
    assert len(ours) == len(theirs)
    different = [(i, a, b) for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    assert not different, different[:3]
