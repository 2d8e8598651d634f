"""Minimum Bayes risk decoding over an n-best list: the hypothesis the others agree with most.

    best = mbr_choice([("Ein Hund läuft.", -0.41), ("Ein Hund rennt.", -0.52), ...], "chrf")

Each hypothesis is scored by its expected utility against the list itself, the others standing
in for references, weighted by the model's probabilities (a softmax of the n-best scores):
sum_j p_j * utility(h_i, h_j). The utility is sacreBLEU's sentence chrF or BLEU. Beam search
picks the single most probable output; MBR picks the one closest to where the probability mass
lies, which corrects some of beam search's bias towards short or odd outputs (Eikema & Aziz,
2020; Freitag et al., 2022).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

UTILITIES = ("chrf", "bleu")


def mbr_choice(hypotheses: Sequence[tuple[str, float | None]], utility: str) -> str:
    """The hypothesis of highest expected `utility` ("chrf" or "bleu") against the others."""
    if utility not in UTILITIES:
        raise ValueError(f"unknown MBR utility {utility!r}: choose {' or '.join(UTILITIES)}")
    texts = [text for text, _ in hypotheses]
    if len(set(texts)) <= 1:
        return texts[0] if texts else ""
    weights = _probabilities([score for _, score in hypotheses])
    metric = _metric(utility)
    expected = [
        sum(w * metric.sentence_score(h, [r]).score for r, w in zip(texts, weights, strict=True))
        for h in texts
    ]
    return texts[max(range(len(texts)), key=lambda i: (expected[i], -i))]  # ties: better rank


def _probabilities(scores: list[float | None]) -> list[float]:
    """Softmax of the scores; uniform where they are missing or not finite."""
    if any(s is None or not math.isfinite(s) for s in scores):
        return [1 / len(scores)] * len(scores)
    top = max(scores)
    exps = [math.exp(s - top) for s in scores]
    return [e / sum(exps) for e in exps]


def _metric(utility: str):
    import sacrebleu

    if utility == "chrf":
        return sacrebleu.CHRF()
    return sacrebleu.BLEU(effective_order=True)  # sentence BLEU needs it
