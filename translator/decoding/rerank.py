"""n-best reranking: the beam's candidates rescored by a right-to-left model, a reverse-direction
(channel) model and length, with weights tuned on a validation set.

    setup = RerankSetup(nbest=10, right_to_left=("runs/r2l",), channel=("runs/deen",))
    weights = tune(Reranker(translator, setup, Translator.load), sources, references)
    weights.save("runs/a/rerank.json")
    file = RerankWeights.load("runs/a/rerank.json")
    Reranker(translator, file.setup, Translator.load).translate(texts, file.weights)

Each candidate h of a source x gets four features: log p(h|x) under the translator's own model
(or ensemble), log p(reversed h|x) under the right-to-left model(s), log p(x|h) under the channel
model(s) (a run that translates the other way: noisy-channel reranking, Yee et al., 2019), and
h's length in tokens; its score is their weighted sum, the forward weight fixed at 1. Every
log-probability is teacher-forced and summed (not length-normalized: the length weight does
that job, tuned). Models of other directions tokenize the texts their own way, so they need no
shared vocabulary. Tuning searches a grid of weights for the highest corpus BLEU on the given
set, from sentence statistics computed once per candidate, so that a grid of thousands of
points takes seconds.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from translator.errors import InputError
from translator.files import atomic_write_text

FEATURES = ("forward", "right_to_left", "channel", "length")
FILE = "rerank.json"  # the default name, in the run dir of the model it reranks for

# The grid tuning searches (the forward weight is 1): the other models' weights, then length
GRID = {
    "right_to_left": np.round(np.arange(0.0, 1.51, 0.1), 2),
    "channel": np.round(np.arange(0.0, 1.01, 0.05), 2),
    "length": np.round(np.arange(-1.0, 3.01, 0.1), 2),
}


@dataclass(frozen=True)
class RerankSetup:
    """What reranking uses: the n-best size and the runs that score the candidates."""

    nbest: int = 10
    right_to_left: tuple[str, ...] = ()  # runs of model.right_to_left (several: one ensemble)
    channel: tuple[str, ...] = ()  # runs translating target -> source (several: one ensemble)


@dataclass(frozen=True)
class RerankWeights:
    """A reranking setup and its tuned weights: what `translator tune-rerank` saves."""

    setup: RerankSetup
    weights: dict[str, float]  # by FEATURES
    tuned: dict = field(default_factory=dict)  # where and how well: split, BLEU with and without

    def save(self, path: Path) -> None:
        atomic_write_text(Path(path), json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RerankWeights:
        path = Path(path)
        try:
            saved = json.loads(path.read_text())
            setup = saved["setup"]
            weights = {name: float(saved["weights"][name]) for name in FEATURES}
            return cls(
                RerankSetup(
                    int(setup["nbest"]), tuple(setup["right_to_left"]), tuple(setup["channel"])
                ),
                weights,
                saved.get("tuned", {}),
            )
        except FileNotFoundError:
            raise InputError(
                f"no reranking weights at {path}: make them with translator tune-rerank"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path} is not a reranking weights file: {err}") from None


class Reranker:
    """A translator's n-best, rescored by its setup's models."""

    def __init__(self, translator, setup: RerankSetup, load) -> None:
        """`load(run, ensemble=[...])` loads the scoring models (Translator.load)."""
        if translator.engine != "torch":
            raise InputError("reranking scores with the torch engine: drop --engine ctranslate2")
        if setup.nbest < 2:
            raise InputError(f"reranking needs an n-best of at least 2, got {setup.nbest}")
        self.translator, self.setup = translator, setup
        self.scorers = {}
        for name, runs in (("right_to_left", setup.right_to_left), ("channel", setup.channel)):
            if runs:
                first, *others = (Path(run) for run in runs)
                self.scorers[name] = load(first, ensemble=others)
        if "right_to_left" in self.scorers:
            if not self.scorers["right_to_left"].cfg.model.right_to_left:
                raise InputError(f"{setup.right_to_left[0]} is not a right-to-left run")
        own = translator.cfg.data
        if "channel" in self.scorers:
            data = self.scorers["channel"].cfg.data
            if (data.src_lang, data.tgt_lang) != (own.tgt_lang, own.src_lang):
                raise InputError(
                    f"the channel model {setup.channel[0]} translates {data.src_lang}->"
                    f"{data.tgt_lang}, not {own.tgt_lang}->{own.src_lang}"
                )

    def candidates(self, texts: Sequence[str], progress: bool = False, **options):
        """Each text's n-best (as many as setup.nbest; [] for an empty text) and their features:
        an array (texts, nbest, FEATURES), -inf where a text has fewer candidates."""
        nbest = self.setup.nbest
        lists = self.translator.translate_nbest(
            texts, progress, **{**options, "nbest": nbest, "beam_size": nbest, "mbr": None}
        )
        features = np.full((len(texts), nbest, len(FEATURES)), -np.inf)
        flat = [(row, k, hyp) for row, hyps in enumerate(lists) for k, (hyp, _) in enumerate(hyps)]
        if not flat:
            return lists, features
        rows, ranks, hyps = (list(x) for x in zip(*flat, strict=True))
        sources = [texts[row] for row in rows]
        forward, lengths = self.translator.log_likelihoods(sources, hyps)
        features[rows, ranks] = 0.0  # a feature without its model weighs nothing
        features[rows, ranks, 0] = forward
        features[rows, ranks, 3] = lengths
        if "right_to_left" in self.scorers:
            scorer = self.scorers["right_to_left"]
            features[rows, ranks, 1] = scorer.log_likelihoods(sources, hyps)[0]
        if "channel" in self.scorers:
            features[rows, ranks, 2] = self.scorers["channel"].log_likelihoods(hyps, sources)[0]
        return lists, features

    def translate(
        self, texts: Sequence[str], weights: dict[str, float], progress=False, **options
    ) -> list[str]:
        """The best candidate of each text under `weights`."""
        lists, features = self.candidates(texts, progress, **options)
        best = choose(features, weights)
        return [hyps[k][0] if hyps else "" for hyps, k in zip(lists, best, strict=True)]


def choose(features: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Per text, the index of the candidate with the highest weighted sum (ties: the better
    beam rank)."""
    vector = np.array([weights[name] for name in FEATURES])
    present = np.isfinite(features).all(-1)
    scores = np.where(present, np.nan_to_num(features, neginf=0.0) @ vector, -np.inf)
    return scores.argmax(-1)


def tune(
    reranker: Reranker,
    sources: Sequence[str],
    references: Sequence[str],
    tgt_lang: str = "de",
    progress: bool = False,
    **options,
) -> RerankWeights:
    """The grid point of highest corpus BLEU on (sources, references); `tuned` records it, the
    beam's own BLEU on the same n-best (rank 0) and the set's size."""
    lists, features = reranker.candidates(sources, progress, **options)
    stats = _bleu_statistics(lists, references, tgt_lang)
    axes = {
        name: GRID[name] if name == "length" or name in reranker.scorers else np.zeros(1)
        for name in GRID
    }
    best_bleu, best = -1.0, None
    for r2l, channel in itertools.product(axes["right_to_left"], axes["channel"]):
        for length in axes["length"]:
            weights = dict(forward=1.0, right_to_left=r2l, channel=channel, length=length)
            bleu = _corpus_bleu(stats, choose(features, weights))
            if bleu > best_bleu + 1e-9:
                best_bleu, best = bleu, weights
    beam = _corpus_bleu(stats, np.zeros(len(lists), dtype=int))
    tuned = dict(sentences=len(sources), bleu=round(best_bleu, 2), beam_bleu=round(beam, 2))
    return RerankWeights(reranker.setup, {k: float(v) for k, v in best.items()}, tuned)


def _bleu_statistics(lists: list, references: Sequence[str], tgt_lang: str) -> np.ndarray:
    """(texts, nbest, 10) sacreBLEU sufficient statistics per candidate: matches and totals
    for 1-4-grams, hypothesis and reference length; zeros where there is no candidate."""
    from translator.decoding.scoring import bleu_metric

    metric = bleu_metric(tgt_lang, effective_order=True)  # (counts are the same; no warning)
    nbest = max((len(hyps) for hyps in lists), default=1)
    stats = np.zeros((len(lists), nbest, 10))
    for row, (hyps, reference) in enumerate(zip(lists, references, strict=True)):
        for k, (text, _) in enumerate(hyps):
            s = metric.sentence_score(text, [reference])
            stats[row, k] = [*s.counts, *s.totals, s.sys_len, s.ref_len]
        if not hyps:  # an empty output still counts its reference's length
            stats[row, 0, 9] = metric.sentence_score("", [reference]).ref_len
    return stats


def _corpus_bleu(stats: np.ndarray, chosen: np.ndarray) -> float:
    """Corpus BLEU (sacreBLEU's formula, no smoothing) of one candidate per text."""
    total = stats[np.arange(len(stats)), chosen].sum(0)
    counts, totals, sys_len, ref_len = total[:4], total[4:8], total[8], total[9]
    if (counts == 0).any() or sys_len == 0:
        return 0.0
    precision = np.log(counts / totals).mean()
    brevity = min(0.0, 1 - ref_len / sys_len)
    return 100 * math.exp(precision + brevity)
