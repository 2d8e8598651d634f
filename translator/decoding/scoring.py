"""Scores with sacreBLEU: detokenized cased BLEU and chrF, plus the Multi30k papers' convention.

    result = score(hypotheses, references, tgt_lang="de")
    result["bleu"], result["chrf"], result["signature"]

BLEU and chrF are computed by sacreBLEU on detokenized, cased text, the only figures comparable
across systems. `bleu_tok_lc` is the convention of the Multi30k literature (both sides Moses-
tokenized and lowercased, then scored with no further tokenization, like multi-bleu.perl), so our
numbers can be set beside published ones; it is labelled as such wherever it is shown.

With `bootstrap=N`, sacreBLEU also resamples the test set N times (Koehn, 2004) and each BLEU gets
a `*_ci` entry: the half-width of its 95% confidence interval. On Multi30k's 1,000-sentence test
sets it is about ±1.6 BLEU: one run on one test set cannot tell apart recipes a point apart.
"""

from __future__ import annotations

from collections.abc import Sequence


def score(
    hypotheses: Sequence[str],
    references: Sequence[str],
    tgt_lang: str = "de",
    lowercase: bool = False,
    literature: bool = True,
    bootstrap: int = 0,
) -> dict:
    import sacrebleu

    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} references")
    result: dict = {}

    def add_bleu(key: str, metric, hyps: Sequence[str], refs: Sequence[str]) -> None:
        # n_bootstrap=1 is sacreBLEU's "no resampling".
        bleu = metric.corpus_score(hyps, [refs], n_bootstrap=max(bootstrap, 1))
        result[key] = round(bleu.score, 2)
        if bootstrap:
            result[f"{key}_ci"] = round(bleu._ci, 2)  # sacreBLEU keeps the 95% half-width here

    bleu = bleu_metric(tgt_lang)
    add_bleu("bleu", bleu, hypotheses, references)
    chrf = sacrebleu.CHRF()
    result.update(
        chrf=round(chrf.corpus_score(hypotheses, [references]).score, 2),
        signature=str(bleu.get_signature()),
        chrf_signature=str(chrf.get_signature()),
        n=len(hypotheses),
    )
    if lowercase:
        bleu_lc = sacrebleu.BLEU(lowercase=True)
        add_bleu("bleu_lc", bleu_lc, hypotheses, references)
        result["bleu_lc_signature"] = str(bleu_lc.get_signature())
    if literature:
        tokenized = moses_lowercased(hypotheses, tgt_lang), moses_lowercased(references, tgt_lang)
        add_bleu("bleu_tok_lc", sacrebleu.BLEU(tokenize="none", force=True), *tokenized)
    return result


def bleu_metric(tgt_lang: str, **options):
    """sacreBLEU's BLEU with its tokenizer for the target language (13a for most, zh for
    Chinese; Japanese and Korean need sacrebleu's extras [ja], [ko], else 13a); `options` are
    BLEU's own."""
    import sacrebleu

    try:
        return sacrebleu.BLEU(trg_lang=tgt_lang, **options)
    except RuntimeError:  # the language's tokenizer needs a package that is not installed
        return sacrebleu.BLEU(**options)


def references_for(references: Sequence[str], lowercased_model: bool) -> list[str]:
    """What a model's output is scored against. A model trained on lowercased text (data.lowercase)
    cannot be asked for capitals: its BLEU and chrF use lowercased references, as its validation
    does."""
    return [ref.lower() for ref in references] if lowercased_model else list(references)


def moses_lowercased(lines: Sequence[str], lang: str) -> list[str]:
    """Text as the Multi30k papers score it, made exactly as the dataset's official tokenized
    files (data/task1/tok/*.lc.norm.tok.*): lowercase, then Moses' normalize-punctuation.perl
    -l LANG, then tokenizer.perl -l LANG (escaping on, no -a). Byte-identical to the official
    val and test2016 files from the raw ones (tests/decoding/test_scoring.py).

    The perl script reads each line with its newline, and one of its rules (a period before a
    closing quote) only fires when something follows the quote: so the newline goes in too."""
    from sacremoses import MosesPunctNormalizer, MosesTokenizer

    normalizer, moses = MosesPunctNormalizer(lang=lang), MosesTokenizer(lang=lang)
    return [
        moses.tokenize(normalizer.normalize(line.lower() + "\n").rstrip("\n"), escape=True,
                       return_str=True, aggressive_dash_splits=False)
        for line in lines
    ]  # fmt: skip
