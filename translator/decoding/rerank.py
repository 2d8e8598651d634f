"""n-best reranking: the beam's candidates rescored by a right-to-left model, a reverse-direction
(channel) model and length, with weights tuned on a validation set.

    setup = RerankSetup(nbest=20, alpha=1.5, right_to_left=("runs/r2l",), channel=("runs/deen",))
    tuned = tune(Reranker(translator, setup, Translator.load), sources, references)
    tuned.save("runs/a/rerank.json")
    file = RerankWeights.load("runs/a/rerank.json")
    Reranker(translator, file.setup, Translator.load).translate(texts, file.weights)

Each candidate h of a source x gets four features: the beam's own score of h (the translator's
model or ensemble), log p(reversed h | x) under the right-to-left model(s), log p(x | h) under
the channel model(s) (a run that translates the other way: noisy-channel reranking, Yee et al.,
2019), and h's length in words. The three log-probabilities are length-normalized alike (the
search's GNMT penalty with the setup's alpha), so that weights 1, 0, 0, 0 choose what the beam
chose and the tuned weights can only do better on the tuning set. (A fifth, MBR's expected chrF
of h against the n-best, gained 0.09 on val and lost 0.43 on test2016: docs/results.md.) Models
of other directions tokenize the texts their own way: they need no shared vocabulary. Tuning
searches a grid for the highest corpus BLEU, from sentence statistics computed once per
candidate: seconds for a grid of thousands of points.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from translator.errors import InputError
from translator.files import atomic_write_text

FEATURES = ("forward", "right_to_left", "channel", "length")
FILE = "rerank.json"  # the default name, in the run dir of the model it reranks for

# The grid tuning searches (the forward weight is 1), each axis from its neutral value out, so
# that ties keep the simpler weights: the beam's own choice first.
GRID = {
    "right_to_left": np.round(np.arange(0.0, 1.51, 0.1), 2),
    "channel": np.round(np.arange(0.0, 1.51, 0.1), 2),
    "length": np.array(sorted(np.round(np.arange(-0.3, 0.301, 0.02), 2), key=abs)),
}


@dataclass(frozen=True)
class RerankSetup:
    """What reranking decodes and rescores with: the n-best size (the beam), the search's
    length penalty and shortlist, and the runs that score the candidates."""

    nbest: int = 20
    alpha: float = 1.5
    shortlist: bool = True
    right_to_left: tuple[str, ...] = ()  # runs of model.right_to_left (several: one ensemble)
    channel: tuple[str, ...] = ()  # runs translating target -> source (several: one ensemble)

    @property
    def runs(self) -> tuple[str, ...]:
        return self.right_to_left + self.channel


@dataclass(frozen=True)
class RerankWeights:
    """A reranking setup and its tuned weights: what `translator tune-rerank` saves."""

    setup: RerankSetup
    weights: dict[str, float]  # by FEATURES
    tuned: dict = field(default_factory=dict)  # where and how well: split, BLEU with and without

    def save(self, path: Path) -> None:
        """Saved with the scoring runs' paths relative to the file's folder: it works from any
        working directory, and moves with the runs."""
        path = Path(path)
        saved, folder = asdict(self), path.absolute().parent
        for key in ("right_to_left", "channel"):
            runs = saved["setup"][key]
            saved["setup"][key] = [os.path.relpath(Path(run).absolute(), folder) for run in runs]
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(saved, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> RerankWeights:
        path = Path(path)
        try:
            saved = json.loads(path.read_text())
            s = saved["setup"]
            setup = RerankSetup(
                int(s["nbest"]),
                float(s["alpha"]),
                bool(s["shortlist"]),
                tuple(_run_path(run, path.parent) for run in s["right_to_left"]),
                tuple(_run_path(run, path.parent) for run in s["channel"]),
            )
            weights = {name: float(saved["weights"][name]) for name in FEATURES}
            return cls(setup, weights, saved.get("tuned", {}))
        except FileNotFoundError:
            raise InputError(
                f"no reranking weights at {path}: make them with translator tune-rerank"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(f"{path} is not a reranking weights file: {err}") from None


def _run_path(run: str, folder: Path) -> str:
    """A scoring run of a weights file in `folder`: relative to it (older files kept paths
    relative to where tune-rerank ran: those still load from there)."""
    beside = folder / run
    return os.path.normpath(beside) if beside.exists() or not Path(run).exists() else run


class Reranker:
    """A translator's n-best, rescored by its setup's models."""

    def __init__(self, translator, setup: RerankSetup, load) -> None:
        """`load(run, ensemble=[...], threads=N)` loads the scoring models (Translator.load)."""
        import torch

        if translator.engine != "torch":
            raise InputError("reranking scores with the torch engine: drop --engine ctranslate2")
        if setup.nbest < 2:
            raise InputError(f"reranking needs an n-best of at least 2, got {setup.nbest}")
        self.translator, self.setup = translator, setup
        own = translator.cfg.data
        directions = {
            "right_to_left": (setup.right_to_left, (own.src_lang, own.tgt_lang)),
            "channel": (setup.channel, (own.tgt_lang, own.src_lang)),
        }
        self.scorers = {}
        for name, (runs, (src, tgt)) in directions.items():
            if not runs:
                continue
            first, *others = (Path(run) for run in runs)
            # the process's threads stay as they are (a run's decode.threads would set them)
            scorer = load(first, ensemble=others, threads=torch.get_num_threads())
            data = scorer.cfg.data
            if (data.src_lang, data.tgt_lang) != (src, tgt):
                raise InputError(
                    f"the {name.replace('_', '-')} model {first} translates {data.src_lang}->"
                    f"{data.tgt_lang}, not {src}->{tgt}"
                )
            if scorer.cfg.model.right_to_left != (name == "right_to_left"):
                what = "is not" if name == "right_to_left" else "is"
                raise InputError(f"{first} {what} a right-to-left run")
            self.scorers[name] = scorer

    def candidates(self, texts: Sequence[str], progress: bool = False):
        """Each text's n-best (setup.nbest of them; [] for an empty text) and their features:
        an array (texts, nbest, FEATURES), -inf where a text has fewer candidates."""
        from translator.decoding.search import length_penalty

        s = self.setup
        lists = self.translator.translate_nbest(
            texts, progress, nbest=s.nbest, beam_size=s.nbest, length_penalty=s.alpha,
            shortlist=s.shortlist,
        )  # fmt: skip
        features = np.full((len(texts), s.nbest, len(FEATURES)), -np.inf)
        flat = [(row, k, hyp) for row, hyps in enumerate(lists) for k, hyp in enumerate(hyps)]
        if not flat:
            return lists, features
        rows, ranks, hyps = (list(x) for x in zip(*flat, strict=True))
        outputs, sources = [text for text, _ in hyps], [texts[row] for row in rows]
        features[rows, ranks] = 0.0  # a feature without its model weighs nothing
        features[rows, ranks, 0] = [score for _, score in hyps]  # normalized as the search does
        features[rows, ranks, 3] = [len(text.split()) for text in outputs]

        def normalized(scores: list[float], lengths: list[int]) -> list[float]:
            return [x / length_penalty(n, s.alpha) for x, n in zip(scores, lengths, strict=True)]

        if "right_to_left" in self.scorers:
            scores = self.scorers["right_to_left"].log_likelihoods(sources, outputs)
            features[rows, ranks, 1] = normalized(*scores)
        if "channel" in self.scorers:
            scores = self.scorers["channel"].log_likelihoods(outputs, sources)
            features[rows, ranks, 2] = normalized(*scores)
        return lists, features

    def translate(self, texts: Sequence[str], weights: dict[str, float], progress=False):
        """The best candidate of each text under `weights`."""
        return chosen_texts(*self.candidates(texts, progress), weights)


def choose(features: np.ndarray, weights: dict[str, float]) -> np.ndarray:
    """Per text, the index of the candidate with the highest weighted sum (ties: the better
    beam rank)."""
    return _choose_each(features, np.array([[weights[name] for name in FEATURES]]))[:, 0]


def _choose_each(features: np.ndarray, points: np.ndarray) -> np.ndarray:
    """choose() for each row of `points` (weight vectors in FEATURES order) at once: (texts,
    points)."""
    present = np.isfinite(features).all(-1)
    flat = np.nan_to_num(features, neginf=0.0).reshape(-1, features.shape[-1])
    scores = (points @ flat.T).reshape(len(points), *present.shape)  # argmax on the last axis:
    scores[:, ~present] = -np.inf  # 3x faster than on the middle one
    return scores.argmax(-1).T


def chosen_texts(lists: list, features: np.ndarray, weights: dict[str, float]) -> list[str]:
    """Each text's candidate of highest weighted score ("" for an empty text)."""
    best = choose(features, weights)
    return [hyps[k][0] if hyps else "" for hyps, k in zip(lists, best, strict=True)]


def searched_with(opts) -> tuple[int, float, bool]:
    """The beam, alpha and shortlist decoding with `opts` (a DecodeConfig) uses: with
    decode.rerank, those its weights file was tuned with."""
    if opts.rerank:
        setup = RerankWeights.load(Path(opts.rerank)).setup
        return setup.nbest, setup.alpha, setup.shortlist
    return opts.beam_size, opts.length_penalty, opts.shortlist


def tune(
    reranker: Reranker,
    sources: Sequence[str],
    references: Sequence[str],
    tgt_lang: str = "de",
    progress: bool = False,
) -> RerankWeights:
    """The grid point of highest corpus BLEU on (sources, references) (the first of equals:
    the simplest); `tuned` records it, the beam's own BLEU and the set's size."""
    lists, features = reranker.candidates(sources, progress)
    stats = _bleu_statistics(lists, references, tgt_lang)
    axes = {
        name: GRID[name] if name == "length" or name in reranker.scorers else [0]
        for name in FEATURES[1:]  # the forward weight is 1
    }
    grid = np.array([(1.0, *point) for point in itertools.product(*axes.values())])
    best_bleu, best = -1.0, None
    for start in range(0, len(grid), 512):  # 512 points at a time, vectorized
        points = grid[start : start + 512]
        totals = stats[np.arange(len(stats))[:, None], _choose_each(features, points)].sum(0)
        for point, total in zip(points, totals, strict=True):
            bleu = _bleu_of(total)
            if bleu > best_bleu + 1e-9:
                best_bleu, best = bleu, dict(zip(FEATURES, point, strict=True))
    beam = corpus_bleu(stats, np.zeros(len(lists), dtype=int))
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


def corpus_bleu(stats: np.ndarray, chosen: np.ndarray) -> float:
    """sacreBLEU's corpus BLEU (its default exp smoothing) of one candidate per text."""
    return _bleu_of(stats[np.arange(len(stats)), chosen].sum(0))


def _bleu_of(total: np.ndarray) -> float:
    """sacreBLEU's BLEU of summed statistics (see _bleu_statistics)."""
    from sacrebleu import BLEU

    total = total.astype(int).tolist()
    return BLEU.compute_bleu(total[:4], total[4:8], total[8], total[9], "exp").score
