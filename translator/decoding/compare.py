"""Is system B better than system A, and where? Scores, paired significance tests and an analysis
of where the outputs differ, over one set of sentences.

    report = compare_systems({"runs/a": hyps_a, "runs/b": hyps_b}, sources, refs, "de")
    report = compare_groups({"runs/a1": ..., "runs/a2": ...}, {"runs/b1": ..., ...}, sources, refs)
    report["systems"], report["tests"], report["length_buckets"], report["examples"]

Every score and p-value is sacreBLEU's: BLEU (the target language's tokenizer) and chrF, and
`sacrebleu.significance.PairedTest` for paired bootstrap resampling (1,000 samples, with each
system's 95% interval) and paired approximate randomization (10,000 trials), seeded by
SACREBLEU_SEED as sacreBLEU's own command line is, so the figures equal `sacrebleu -i a b
--paired-bs`. The first system is the baseline.

Groups (several training seeds per recipe) get each run's scores, their mean and sample standard
deviation, and a paired bootstrap of the difference of the group means over the sentences (the
same resamples for every run; the p-value as sacreBLEU computes it). Where they differ: BLEU by
source length, word F-measure by how often the word occurs in the training targets (compare-mt's
analysis), and the sentences whose sentence-BLEU differs most.
"""

from __future__ import annotations

import os
import re
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

BOOTSTRAP_SAMPLES = 1000
AR_TRIALS = 10_000
LENGTH_EDGES = (1, 6, 10, 15, 20, 30)  # source words: 1-5, 6-9, 10-14, 15-19, 20-29, 30+
FREQUENCY_EDGES = (0, 1, 2, 5, 10, 100, 1000)  # training counts: 0, 1, 2-4, 5-9, ...


def _metrics(tgt_lang: str, references: Sequence[str]) -> dict:
    """sacreBLEU's BLEU (the target language's tokenizer, as scoring.py uses) and chrF, each
    holding the references' statistics, so every later call passes references=None."""
    import sacrebleu

    refs = [list(references)]
    try:
        bleu = sacrebleu.BLEU(trg_lang=tgt_lang, references=refs)
    except RuntimeError:  # the language's tokenizer needs a package that is not installed
        bleu = sacrebleu.BLEU(references=refs)
    metrics = {"BLEU": bleu, "chrF": sacrebleu.CHRF(references=refs)}
    for metric in metrics.values():
        _remember_statistics(metric)
    return metrics


def _remember_statistics(metric) -> None:
    """Both paired tests and the analysis extract the same systems' sentence statistics
    against the same cached references: compute them once per system (a third of the time)."""
    extract, memo = metric._extract_corpus_statistics, {}

    def remembered(hypotheses, references):
        if references is not None:
            return extract(hypotheses, references)
        key = tuple(hypotheses)
        if key not in memo:
            memo[key] = extract(hypotheses, None)
        return memo[key]

    metric._extract_corpus_statistics = remembered


def _seed() -> int | None:
    seed = os.environ.get("SACREBLEU_SEED", "12345")  # sacreBLEU's default and its variable
    return None if seed.lower() == "none" else int(seed)


def compare_systems(
    systems: Mapping[str, Sequence[str]],
    sources: Sequence[str],
    references: Sequence[str],
    tgt_lang: str = "de",
    train_counts: Counter | None = None,
    examples: int = 5,
) -> dict:
    """Scores, paired tests against the first system, and where the systems differ."""
    from sacrebleu.significance import PairedTest

    named = [(name, list(hyps)) for name, hyps in systems.items()]
    metrics = _metrics(tgt_lang, references)
    tests = {}
    for kind, n in (("bs", BOOTSTRAP_SAMPLES), ("ar", AR_TRIALS)):
        test = PairedTest(named, metrics, None, test_type=kind, n_samples=n, n_ar_confidence=-1)
        tests[kind] = test()
    bs_sigs, bs = tests["bs"]
    _, ar = tests["ar"]
    rows = []
    for i, (name, _) in enumerate(named):
        row = {"name": name}
        for metric in (m for m in bs if m != "System"):  # "BLEU", "chrF2": sacreBLEU's names
            result = bs[metric][i]
            key = metric.lower().rstrip("2")
            row[key] = round(result.score, 2)
            row[f"{key}_mean"] = round(float(result.mean), 2)
            row[f"{key}_ci95"] = round(float(result.ci), 2)
            if i:  # the baseline has no p-values
                row[f"{key}_p_bootstrap"] = round(float(result.p_value), 4)
                row[f"{key}_p_ar"] = round(float(ar[metric][i].p_value), 4)
        rows.append(row)
    report = {
        "mode": "systems",
        "n": len(references),
        "baseline": named[0][0],
        "systems": rows,
        "signatures": {m: str(sig) for m, sig in bs_sigs.items()},
        "ar_trials": AR_TRIALS,
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "seed": _seed(),
    }
    report.update(differences(systems, sources, references, metrics, train_counts, examples))
    return report


def compare_groups(
    group_a: Mapping[str, Sequence[str]],
    group_b: Mapping[str, Sequence[str]],
    sources: Sequence[str],
    references: Sequence[str],
    tgt_lang: str = "de",
    train_counts: Counter | None = None,
    examples: int = 5,
) -> dict:
    """Each group's runs, mean ± sd, and a paired bootstrap of B's mean minus A's mean."""
    metrics = _metrics(tgt_lang, references)
    rng = np.random.default_rng(_seed())
    samples = rng.choice(len(references), size=(BOOTSTRAP_SAMPLES, len(references)))
    report: dict = {
        "mode": "groups",
        "n": len(references),
        "groups": {},
        "tests": {},
        "bootstrap_samples": BOOTSTRAP_SAMPLES,
        "seed": _seed(),
    }
    resampled: dict = {}
    means: dict = {}  # unrounded, for the test
    for label, group in (("a", group_a), ("b", group_b)):
        runs, resampled[label] = {}, {}
        for metric_name, metric in metrics.items():
            key = metric_name.lower()
            scores, draws = [], []
            for name, hyps in group.items():
                stats = np.asarray(metric._extract_corpus_statistics(list(hyps), None), "float64")
                scores.append(metric._compute_score_from_stats(stats.sum(0)).score)
                draws.append(
                    [metric._compute_score_from_stats(s.sum(0)).score for s in stats[samples]]
                )
                runs.setdefault(name, {})[key] = round(float(scores[-1]), 2)
            resampled[label][key] = np.mean(draws, axis=0)
            means[label, key] = float(np.mean(scores))
            report["groups"].setdefault(label, {})[key] = {
                "mean": round(float(np.mean(scores)), 2),
                "sd": round(float(np.std(scores, ddof=1)), 2),
            }
        report["groups"][label]["runs"] = runs
    for key in ("bleu", "chrf"):
        diffs = resampled["b"][key] - resampled["a"][key]
        observed = means["b", key] - means["a", key]
        centred = np.abs(diffs - diffs.mean())  # the null: no difference (as sacreBLEU's bs)
        p = (np.sum(centred > abs(observed)) + 1) / (len(diffs) + 1)
        low, high = np.percentile(diffs, [2.5, 97.5])
        report["tests"][key] = {
            "difference": round(float(observed), 2),
            "ci95": [round(float(low), 2), round(float(high), 2)],
            "p_bootstrap": round(float(p), 4),
        }
    first_a, first_b = next(iter(group_a)), next(iter(group_b))
    pair = {first_a: group_a[first_a], first_b: group_b[first_b]}
    report.update(differences(pair, sources, references, metrics, train_counts, examples))
    return report


# -- where the systems differ ----------------------------------------------------------------


def differences(
    systems: Mapping[str, Sequence[str]],
    sources: Sequence[str],
    references: Sequence[str],
    metrics: dict,
    train_counts: Counter | None,
    examples: int,
) -> dict:
    """BLEU by source length, word F by training frequency, the sentences that differ most.
    `metrics`: _metrics()'s, whose BLEU has the references cached."""
    import sacrebleu

    bleu = metrics["BLEU"]
    stats = {
        name: np.asarray(bleu._extract_corpus_statistics(list(hyps), None), dtype="float64")
        for name, hyps in systems.items()
    }
    lengths = np.array([len(s.split()) for s in sources])
    length_rows = []
    for low, high in zip(LENGTH_EDGES, (*LENGTH_EDGES[1:], None)):
        mask = (lengths >= low) & (lengths < high if high else True)
        if mask.any():
            label = f"{low}-{high - 1}" if high else f"{low}+"
            length_rows.append(
                {
                    "bucket": label,
                    "sentences": int(mask.sum()),
                    "bleu": {
                        n: round(bleu._compute_score_from_stats(s[mask].sum(0)).score, 2)
                        for n, s in stats.items()
                    },
                }
            )
    report = {"length_buckets": length_rows}
    if train_counts is not None:
        report["frequency_buckets"] = word_f_by_frequency(systems, references, train_counts)
    sentence = sacrebleu.BLEU(effective_order=True)
    per_sentence = {
        name: np.array([sentence._compute_score_from_stats(row).score for row in s])
        for name, s in stats.items()
    }
    names = list(systems)
    if len(names) >= 2 and examples:
        delta = per_sentence[names[1]] - per_sentence[names[0]]
        order = np.argsort(-np.abs(delta), kind="stable")[:examples]
        report["examples"] = [
            {
                "index": int(i),
                "source": sources[i],
                "reference": references[i],
                "outputs": {n: systems[n][i] for n in names},
                "sentence_bleu": {n: round(float(per_sentence[n][i]), 1) for n in names},
            }
            for i in order
        ]
    return report


def words(line: str) -> list[str]:
    """Words as compared by frequency: lowercased, punctuation split off."""
    return re.findall(r"\w+|[^\w\s]", line.lower())


def count_words(lines: Sequence[str]) -> Counter:
    counts: Counter = Counter()
    for line in lines:
        counts.update(words(line))
    return counts


def word_f_by_frequency(
    systems: Mapping[str, Sequence[str]], references: Sequence[str], train_counts: Counter
) -> list[dict]:
    """Word F-measure per bucket of training frequency (compare-mt's analysis): a reference or
    output word falls in the bucket of its count in the training targets; matches are clipped
    per sentence."""

    def bucket(word: str) -> int:
        count = train_counts.get(word, 0)
        return max(i for i, edge in enumerate(FREQUENCY_EDGES) if count >= edge)

    ref_words = [Counter(words(r)) for r in references]
    table = {i: {"reference_words": 0} for i in range(len(FREQUENCY_EDGES))}
    for ref in ref_words:
        for word, n in ref.items():
            table[bucket(word)]["reference_words"] += n
    for name, hyps in systems.items():
        matched, out = Counter(), Counter()
        for hyp, ref in zip(hyps, ref_words):
            for word, n in Counter(words(hyp)).items():
                out[bucket(word)] += n
                matched[bucket(word)] += min(n, ref.get(word, 0))
        for i, row in table.items():
            precision = matched[i] / out[i] if out[i] else 0.0
            recall = matched[i] / row["reference_words"] if row["reference_words"] else 0.0
            f = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            row.setdefault("f", {})[name] = round(100 * f, 1)
    rows = []
    for i, row in table.items():
        low = FREQUENCY_EDGES[i]
        high = FREQUENCY_EDGES[i + 1] - 1 if i + 1 < len(FREQUENCY_EDGES) else None
        label = str(low) if high == low else (f"{low}-{high}" if high is not None else f"{low}+")
        if row["reference_words"]:
            rows.append({"bucket": label, **row})
    return rows
