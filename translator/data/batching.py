"""Length-bucketed token-budget batches and the tensors a training step needs.

    sampler = sampler_for(pairs, max_tokens=4096, max_sentences=None, seed=1, pool_batches=100)
    for indices in sampler.epoch(3):            # lists of sentence indices, same for (seed, epoch)
        batch = make_batch(pairs, indices, vocab.pad_id, vocab.sos_id, vocab.eos_id)

Per epoch: shuffle all sentences, cut them into pools of about `pool_batches` batches, sort each
pool by source then target length, and pack consecutive sentences while `n_sentences x longest
side` stays within the budget; then shuffle the order of the batches. Sorting inside pools keeps
padding small while the pools keep batches random. With `world_size > 1` the batches of an epoch
are dealt round-robin to the ranks, so across ranks every sentence is seen exactly once per epoch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from translator.data.corpus import ParallelIds

if TYPE_CHECKING:  # torch is imported where tensors are made: `translator prepare` needs none
    import torch


class TokenBatchSampler:
    def __init__(
        self,
        src_lengths: np.ndarray,
        tgt_lengths: np.ndarray,
        max_tokens: int,
        max_sentences: int | None = None,
        seed: int = 0,
        pool_batches: int = 100,
        rank: int = 0,
        world_size: int = 1,
        accumulate: int = 1,
    ):
        """Lengths are the padded sizes a sentence occupies (specials included).

        An epoch's batch count is made a multiple of world_size x accumulate, so that every rank
        takes the same number of optimizer steps and one process accumulating N batches sees
        exactly the batches of N ranks.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        self.sizes = np.maximum(src_lengths, tgt_lengths).astype(np.int64)
        if len(self.sizes) and self.sizes.max() > max_tokens:
            raise ValueError(
                f"a sentence of {self.sizes.max()} tokens exceeds the batch budget of {max_tokens}"
            )
        self.src_lengths, self.tgt_lengths = src_lengths, tgt_lengths
        self.max_tokens = max_tokens
        self.max_sentences = max_sentences or len(self.sizes) or 1
        self.seed, self.pool_batches = seed, pool_batches
        self.rank, self.world_size, self.accumulate = rank, world_size, accumulate

    def epoch(self, epoch: int) -> list[np.ndarray]:
        """This rank's batches for `epoch`, a pure function of (seed, epoch, rank, world_size)."""
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.sizes))
        mean_batch = max(1, self.max_tokens // max(1, int(self.sizes.mean()) if len(order) else 1))
        pool = mean_batch * self.pool_batches
        batches = []
        for start in range(0, len(order), pool):
            batches.extend(self._pack(self._snake_sort(order[start : start + pool])))
        batches = [batches[i] for i in rng.permutation(len(batches))]
        if self.world_size * self.accumulate > 1:
            batches = _split_until_divisible(batches, self.world_size * self.accumulate)
        return batches[self.rank :: self.world_size]

    def _snake_sort(self, chunk: np.ndarray) -> np.ndarray:
        """Sort by source length, then by target length, ascending and descending in turn.

        Walking the (src, tgt) length grid like a snake keeps neighbours similar on both sides,
        also across the boundary between two source lengths: 4.2% padding on Multi30k at 4,096
        tokens, against 6.5% for a plain sort by the longer side (`translator prepare` reports it).
        """
        src, tgt = self.src_lengths[chunk], self.tgt_lengths[chunk]
        return chunk[np.lexsort((np.where(src % 2 == 0, tgt, -tgt), src))]

    def _pack(self, chunk: np.ndarray) -> list[np.ndarray]:
        """Consecutive runs of `chunk` within the budget, as views of it (numpy, not Python
        lists of ints: an epoch of 5M sentences then takes 40 MB instead of 200)."""
        batches, start, longest = [], 0, 0
        sizes = self.sizes[chunk].tolist()
        for end, size in enumerate(sizes):
            grown = max(longest, size)
            count = end - start
            if count and (grown * (count + 1) > self.max_tokens or count >= self.max_sentences):
                batches.append(chunk[start:end])
                start, grown = end, size
            longest = grown
        if start < len(sizes):
            batches.append(chunk[start:])
        return batches


def _split_until_divisible(batches: list[np.ndarray], multiple: int) -> list[np.ndarray]:
    """Halve the largest batches until their number divides by `multiple` (lockstep ranks)."""
    batches = list(batches)
    while len(batches) % multiple:
        largest = max(range(len(batches)), key=lambda i: len(batches[i]))
        if len(batches[largest]) < 2:
            break  # fewer sentences than ranks: some ranks get one batch less
        big = batches.pop(largest)
        half = len(big) // 2
        batches[largest:largest] = [big[:half], big[half:]]
    return batches


@dataclass
class Batch:
    """Tensors for one step: decoder input is target minus its last token, labels minus first."""

    src: torch.Tensor  # (B, S) source ids + <eos>, right-padded
    tgt_in: torch.Tensor  # (B, T) <sos> + target ids
    tgt_out: torch.Tensor  # (B, T) target ids + <eos>
    n_tokens: int  # non-pad label tokens (the loss is summed over these)
    n_src_tokens: int

    def pin_memory(self) -> Batch:
        return Batch(
            self.src.pin_memory(),
            self.tgt_in.pin_memory(),
            self.tgt_out.pin_memory(),
            self.n_tokens,
            self.n_src_tokens,
        )

    def to(self, device: torch.device, non_blocking: bool = False) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(
            move(self.src), move(self.tgt_in), move(self.tgt_out), self.n_tokens, self.n_src_tokens
        )


def pad_sequences(
    sequences: list[np.ndarray], pad_id: int, prefix: int | None = None, suffix: int | None = None
) -> np.ndarray:
    """(B, longest) int64 array of `[prefix] + seq + [suffix]`, right-padded with `pad_id`."""
    extra = (prefix is not None) + (suffix is not None)
    lengths = [len(s) + extra for s in sequences]
    out = np.full((len(sequences), max(lengths, default=0)), pad_id, dtype=np.int64)
    start = int(prefix is not None)
    for row, seq in enumerate(sequences):
        if prefix is not None:
            out[row, 0] = prefix
        out[row, start : start + len(seq)] = seq
        if suffix is not None:
            out[row, start + len(seq)] = suffix
    return out


def make_batch(
    pairs: ParallelIds,
    indices: np.ndarray | list[int],
    pad_id: int,
    sos_id: int,
    eos_id: int,
    right_to_left: bool = False,  # targets last token first (model.right_to_left)
) -> Batch:
    import torch

    src = pad_sequences([pairs.src[i] for i in indices], pad_id, suffix=eos_id)
    step = -1 if right_to_left else 1
    tgt = pad_sequences(
        [pairs.tgt[i][::step] for i in indices], pad_id, prefix=sos_id, suffix=eos_id
    )
    tgt_in, tgt_out = tgt[:, :-1].copy(), tgt[:, 1:].copy()
    tgt_in[tgt_in == eos_id] = pad_id  # the <eos> of shorter rows is never an input
    return Batch(
        src=torch.from_numpy(src),
        tgt_in=torch.from_numpy(tgt_in),
        tgt_out=torch.from_numpy(tgt_out),
        n_tokens=int((tgt_out != pad_id).sum()),
        n_src_tokens=int((src != pad_id).sum()),
    )


def sampler_for(
    pairs: ParallelIds,
    max_tokens: int,
    max_sentences: int | None,
    seed: int,
    pool_batches: int,
    rank: int = 0,
    world_size: int = 1,
    accumulate: int = 1,
) -> TokenBatchSampler:
    """A sampler over `pairs` with the padded sizes make_batch gives them."""
    return TokenBatchSampler(
        *padded_lengths(pairs),
        max_tokens,
        max_sentences,
        seed,
        pool_batches,
        rank,
        world_size,
        accumulate,
    )


def padded_lengths(pairs: ParallelIds) -> tuple[np.ndarray, np.ndarray]:
    """The lengths `make_batch` gives each pair: source + <eos>, target + <sos> (or <eos>)."""
    return pairs.src.lengths() + 1, pairs.tgt.lengths() + 1


def padding_ratio(sampler: TokenBatchSampler, batches: list[np.ndarray] | None = None) -> float:
    """Fraction of batch positions (source and target) that are padding, in `batches` (default:
    the sampler's first epoch)."""
    real = padded = 0
    for indices in sampler.epoch(0) if batches is None else batches:
        src, tgt = sampler.src_lengths[indices], sampler.tgt_lengths[indices]
        real += int(src.sum() + tgt.sum())
        padded += len(indices) * int(src.max() + tgt.max())
    return 1.0 - real / padded if padded else 0.0
