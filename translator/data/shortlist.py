"""The lexical shortlist: for each source token, the target tokens it is likely to translate to.

    shortlist = learn_shortlist(src_ids, src_offsets, tgt_ids, tgt_offsets, src_size, tgt_size)
    shortlist.targets([[12, 845, 7], [12, 99]])    # sorted target ids a batch may output
    shortlist.own_targets(batch)                   # the same, and which each sentence may output
    shortlist.to_file(path); Shortlist.from_file(path)
    shortlist.vmap_lines(src_itos, tgt_itos)      # CTranslate2's vocabulary map

Decoding a batch then scores only the union of its source tokens' candidates, the most frequent
target tokens and <unk>/<eos>: the output layer (for a small model, the costliest layer of a
decoding step) shrinks from the whole vocabulary to that union, as Marian's `--shortlist` and
CTranslate2's `use_vmap` do.

The candidates come from IBM Model 1 (Brown et al., 1993) learned by EM on the training pairs'
vocabulary ids: p(t|s), every target token explained by one source token of its sentence or by
NULL. Co-occurrence counts alone would rank "ein" and "." first for every source token; the
model's explaining-away puts each token's own translations first. Vectorized over the
(sentence, source token, target token) triples, five iterations take 3 s on Multi30k; a large
corpus is sampled to a fixed number of triples (5M pairs: 4 s). The same ids give the same file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

PER_SOURCE = 50  # candidates per source token (Marian's usual `lex.s2t 50 50`)
FREQUENT = 50  # most frequent target tokens, always candidates
MAX_TRIPLES = 8_000_000  # co-occurrences learned from (all of Multi30k's 5.3M; ~0.7 GB)
ITERATIONS = 5
SEED = 0


@dataclass(frozen=True)
class Shortlist:
    candidates: np.ndarray  # (source vocabulary size, PER_SOURCE) int32 target ids, -1 = none
    always: np.ndarray  # (n,) int32: the frequent target tokens and <unk>, <eos>

    def targets(self, batch: list[list[int]]) -> np.ndarray:
        """Sorted target ids that decoding `batch` (source id lists) may output."""
        return self.own_targets(batch)[0]

    def own_targets(self, batch: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        """`targets(batch)`, and which of them each sentence may output itself: a
        (len(batch), len(targets)) bool array. A search that keeps each sentence to its own
        candidates gives it the same output whatever else its batch holds."""
        sources = np.fromiter((i for ids in batch for i in ids), dtype=np.int64)
        picked = self.candidates[sources]  # (source tokens, PER_SOURCE)
        found = picked >= 0
        union = np.union1d(picked[found], self.always)
        rows = np.repeat(np.arange(len(batch)), [len(ids) for ids in batch])  # of each source
        own = np.zeros((len(batch), len(union)), dtype=bool)
        own[:, np.searchsorted(union, self.always)] = True
        own[
            np.broadcast_to(rows[:, None], picked.shape)[found],
            np.searchsorted(union, picked[found]),
        ] = True
        return union, own

    def vmap_lines(self, src_itos: list[str], tgt_itos: list[str]) -> list[str]:
        """CTranslate2's vocabulary map: `source<TAB>targets`; the empty source's targets are
        always candidates."""
        lines = ["\t" + " ".join(tgt_itos[t] for t in self.always)]
        for s, row in enumerate(self.candidates):
            row = row[row >= 0]
            if len(row):
                lines.append(src_itos[s] + "\t" + " ".join(tgt_itos[t] for t in row))
        return lines

    def to_file(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tmp = path.with_name(path.name + ".tmp")
        save_file({"candidates": self.candidates, "always": self.always}, str(tmp))
        tmp.replace(path)

    @classmethod
    def from_file(cls, path: Path) -> Shortlist:
        from safetensors.numpy import load_file

        arrays = load_file(str(path))
        return cls(arrays["candidates"], arrays["always"])


def learn_shortlist(
    src_ids: np.ndarray,
    src_offsets: np.ndarray,
    tgt_ids: np.ndarray,
    tgt_offsets: np.ndarray,
    src_size: int,
    tgt_size: int,
    specials: tuple[int, ...],
) -> Shortlist:
    """The shortlist of a training split (flat ids and offsets, as the prepared corpus stores
    them; `specials`: target ids always kept, <unk> and <eos>)."""
    src_len, tgt_len = np.diff(src_offsets), np.diff(tgt_offsets)
    rows = _sampled_rows(src_len, tgt_len)
    src, src_len = _gather(src_ids, src_offsets, rows)
    tgt, tgt_len = _gather(tgt_ids, tgt_offsets, rows)
    null = src_size  # one NULL source token per sentence explains function words
    src, src_len = _with_null(src, src_len, null)
    p_t_given_s = _ibm1(src, src_len, tgt, tgt_len, tgt_size)
    s_of, t_of, prob = p_t_given_s
    order = np.lexsort((t_of, -prob, s_of))  # by source, best first (ties by id: deterministic)
    s_of, t_of = s_of[order], t_of[order]
    starts = np.searchsorted(s_of, np.arange(src_size + 1))
    rank = np.arange(len(s_of)) - starts[s_of]
    top = (rank < PER_SOURCE) & (s_of < src_size)
    candidates = np.full((src_size, PER_SOURCE), -1, dtype=np.int32)
    candidates[s_of[top], rank[top]] = t_of[top]
    counts = np.bincount(tgt, minlength=tgt_size)
    frequent = np.argsort(-counts, kind="stable")[:FREQUENT]
    always = np.union1d(frequent[counts[frequent] > 0], specials).astype(np.int32)
    return Shortlist(candidates, always)


def _sampled_rows(src_len: np.ndarray, tgt_len: np.ndarray) -> np.ndarray:
    """Every pair, or a seeded random sample of them holding about MAX_TRIPLES triples."""
    triples = (src_len + 1) * tgt_len
    total = int(triples.sum())
    if total <= MAX_TRIPLES:
        return np.arange(len(src_len))
    n = int(len(src_len) * MAX_TRIPLES / total)
    return np.sort(np.random.default_rng(SEED).choice(len(src_len), n, replace=False))


def _gather(ids, offsets: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The flat ids and lengths of sentences `rows` (ids may be a memory map)."""
    lengths = np.diff(offsets)[rows]
    starts = offsets[:-1][rows]
    if len(rows) == len(offsets) - 1:
        return np.asarray(ids[: offsets[-1]], dtype=np.int64), lengths
    within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.asarray(ids[np.repeat(starts, lengths) + within], dtype=np.int64), lengths


def _with_null(src: np.ndarray, src_len: np.ndarray, null: int) -> tuple[np.ndarray, np.ndarray]:
    ends = np.cumsum(src_len)
    return np.insert(src, ends, null), src_len + 1


def _ibm1(src, src_len, tgt, tgt_len, tgt_size):
    """IBM Model 1's p(t|s) over the co-occurring (s, t): (s, t, p) arrays."""
    n = len(src_len)
    per_sentence = src_len * tgt_len
    sentence = np.repeat(np.arange(n), per_sentence)
    within = np.arange(per_sentence.sum()) - np.repeat(np.cumsum(per_sentence) - per_sentence,
                                                       per_sentence)  # fmt: skip
    src_start = np.cumsum(src_len) - src_len
    tgt_start = np.cumsum(tgt_len) - tgt_len
    target_position = tgt_start[sentence] + within % tgt_len[sentence]  # one EM group each
    s = src[src_start[sentence] + within // tgt_len[sentence]]
    del sentence, within
    pairs, pair_of = np.unique(s * tgt_size + tgt[target_position], return_inverse=True)
    del s
    pair_of = pair_of.astype(np.int32)
    s_of, t_of = pairs // tgt_size, pairs % tgt_size
    prob = np.ones(len(pairs))  # uniform start: the first E-step counts co-occurrences
    for _ in range(ITERATIONS):
        p = prob[pair_of]
        p /= np.bincount(target_position, weights=p, minlength=len(tgt))[target_position]
        expected = np.bincount(pair_of, weights=p, minlength=len(pairs))
        prob = expected / np.bincount(s_of, weights=expected)[s_of]
    return s_of, t_of, prob
