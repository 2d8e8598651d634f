"""Scores with sacreBLEU: detokenized cased BLEU and chrF, plus the Multi30k papers' convention.

    result = score(hypotheses, references, tgt_lang="de")
    result["bleu"], result["chrf"], result["signature"]

BLEU and chrF are computed by sacreBLEU on detokenized, cased text, the only figures comparable
across systems. `bleu_tok_lc` is the convention of the Multi30k literature (both sides Moses-
tokenized and lowercased, then scored with no further tokenization, like multi-bleu.perl), so our
numbers can be set beside published ones; it is labelled as such wherever it is shown.
"""

from __future__ import annotations

from collections.abc import Sequence


def score(
    hypotheses: Sequence[str],
    references: Sequence[str],
    tgt_lang: str = "de",
    lowercase: bool = False,
    literature: bool = True,
) -> dict:
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    bleu = sacrebleu.BLEU()
    chrf = sacrebleu.CHRF()
    result = {
        "bleu": round(bleu.corpus_score(hypotheses, [references]).score, 2),
        "chrf": round(chrf.corpus_score(hypotheses, [references]).score, 2),
        "signature": str(bleu.get_signature()),
        "chrf_signature": str(chrf.get_signature()),
        "n": len(hypotheses),
    }
    if lowercase:
        bleu_lc = sacrebleu.BLEU(lowercase=True)
        result["bleu_lc"] = round(bleu_lc.corpus_score(hypotheses, [references]).score, 2)
        result["bleu_lc_signature"] = str(bleu_lc.get_signature())
    if literature:
        result["bleu_tok_lc"] = round(
            tokenized_lowercased_bleu(hypotheses, references, tgt_lang), 2
        )
    return result


def tokenized_lowercased_bleu(
    hypotheses: Sequence[str], references: Sequence[str], lang: str
) -> float:
    """BLEU on Moses-tokenized, lowercased text (how the Multi30k papers report BLEU)."""
    import sacrebleu
    from sacremoses import MosesTokenizer

    moses = MosesTokenizer(lang=lang)

    def prepare(lines: Sequence[str]) -> list[str]:
        return [moses.tokenize(line.lower(), escape=False, return_str=True) for line in lines]

    metric = sacrebleu.BLEU(tokenize="none", force=True)
    return metric.corpus_score(prepare(hypotheses), [prepare(references)]).score
