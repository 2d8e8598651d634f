"""The corpus as a run trains on it: vocabularies and BPE, the training pairs with their batch
sampler (this rank's share, segmented anew every epoch under BPE-dropout), and the validation
split.

    data = TrainingData(cfg, dist)        # prepares the corpus when its cache is missing
    data = TrainingData.on_every_rank(cfg, dist)   # rank 0 prepares it, the others then load it
    batches = data.sampler.epoch(epoch)

A fine-tuned run (train.init_from) may mix pairs of its parent's training data into its own
(data.replay) and score more sets at every validation (train.keep_eval, `keep_sets`). With
data.bidirectional the training pairs come with their reverse (target -> source) until the
trainer calls `forward_only()`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from translator import run_dir as rd
from translator.config import Config
from translator.data.batching import sampler_for
from translator.data.corpus import ParallelIds, prepare
from translator.data.sources import read_split_texts
from translator.data.vocab import Vocab
from translator.decoding.scoring import references_for

log = logging.getLogger("translator")


class TrainingData:
    def __init__(self, cfg: Config, dist, resumed: Path | None = None) -> None:
        d = cfg.data
        self.cfg, self.dist = cfg, dist
        self.corpus = prepare(cfg, numbered_as=resumed)  # a resumed run: its own vocabularies
        self.src_vocab, self.tgt_vocab = self.corpus.src_vocab, self.corpus.tgt_vocab
        self.subword = self.corpus.subword
        self.tgt_subword = self.corpus.tgt_subword  # separate BPEs (or BPE-dropout)
        self.replay_pairs = self._replay_pairs() if d.replay else None
        self.both_directions = d.bidirectional > 0  # BiT's first phase
        self.use_train(self.corpus.splits[d.train_split])
        self.valid_pairs, _ = self.corpus.splits[d.valid_split].filter_length(
            cfg.model.max_positions - 2
        )
        self.valid_src, self.valid_refs = self._texts(d.valid_split)
        self.keep_sets = {name: self._texts(name) for name in cfg.train.keep_eval}

    @classmethod
    def on_every_rank(cls, cfg: Config, dist, resumed: Path | None = None) -> TrainingData:
        """Rank 0 builds the cache (once), which the other ranks load after it."""
        if dist.is_main:
            data = cls(cfg, dist, resumed)
        dist.barrier()
        return data if dist.is_main else cls(cfg, dist, resumed)

    def _texts(self, name: str) -> tuple[list[str], list[str]]:
        """The sources and references a validation scores BLEU on, at most valid_max_sentences:
        of the validation split, or of a train.keep_eval set."""
        src, refs = read_split_texts(self.cfg, name)
        limit = self.cfg.train.valid_max_sentences
        return src[:limit], references_for(refs[:limit], self.cfg.data.lowercase)

    def _replay_pairs(self):
        """data.replay: pairs drawn at random from the parent run's training data, as many as
        make that share of the mixed training set."""
        parent = rd.read_config(Path(self.cfg.train.init_from))
        corpus = prepare(parent)
        if (corpus.src_vocab, corpus.tgt_vocab) != (self.src_vocab, self.tgt_vocab):
            raise rd.RunError(
                f"the training data of {self.cfg.train.init_from} no longer gives its "
                "vocabularies (its files or settings changed); cannot replay it"
            )
        pool = corpus.splits[parent.data.train_split]
        new = len(self.corpus.splits[self.cfg.data.train_split])
        share = self.cfg.data.replay
        count = round(new * share / (1 - share))
        rng = np.random.default_rng(self.cfg.train.seed)
        picked = rng.choice(len(pool), count, replace=count > len(pool))
        # (the parent's data.max_len may have been longer)
        replayed, _ = pool.select(np.sort(picked)).filter_length(self.cfg.data.max_len)
        log.info(
            "replay: %d pairs of %s's training data mixed in (%.0f%% of training pairs)",
            len(replayed), self.cfg.train.init_from, 100 * len(replayed) / (new + len(replayed)),
        )  # fmt: skip
        return replayed

    def check_same_vocabularies(self, run_dir: Path) -> None:
        """A resumed run must read and write the ids it was trained with."""
        saved = (
            Vocab.from_file(run_dir / rd.SRC_VOCAB),
            Vocab.from_file(run_dir / rd.TGT_VOCAB),
        )
        if saved != (self.src_vocab, self.tgt_vocab):
            raise rd.RunError(
                f"the data now gives other vocabularies than {run_dir} was trained with; "
                "cannot resume"
            )

    def use_train(self, pairs, resampled: bool = False) -> None:
        """Train on `pairs` (and the replayed ones): the prepared split, which preparation
        already cut to data.max_len, or a BPE-dropout resampling of it, which may run longer."""
        d = self.cfg.data
        if resampled:
            pairs, _ = pairs.filter_length(d.max_len)
        if self.replay_pairs is not None:
            pairs = pairs + self.replay_pairs
        if self.both_directions:  # each pair also read from target to source
            pairs = pairs + ParallelIds(pairs.tgt, pairs.src)
        self.train_pairs = pairs
        self.sampler = sampler_for(
            self.train_pairs,
            d.max_tokens,
            d.max_sentences,
            self.cfg.train.seed,
            d.pool_batches,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
            accumulate=self.cfg.train.accumulate,
        )

    def forward_only(self) -> None:
        """data.bidirectional's second phase: the training pairs in their own direction only."""
        self.both_directions = False
        self.use_train(self.corpus.splits[self.cfg.data.train_split])

    def resample_segmentation(self) -> None:
        """BPE-dropout: segment train anew for this epoch; all ranks take rank 0's sample, so that
        they agree on the batches (a resumed epoch samples anew)."""
        main = self.dist.is_main
        sampled = self.corpus.sample_train(self.cfg.vocab.bpe_dropout) if main else None
        self.use_train(self.dist.broadcast(sampled), resampled=True)
