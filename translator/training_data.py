"""The corpus as a run trains on it: vocabularies and BPE, the training pairs with their batch
sampler (this rank's share, segmented anew every epoch under BPE-dropout), and the validation
split.

    data = TrainingData(cfg, dist)        # prepares the corpus when its cache is missing
    batches = data.sampler.epoch(epoch)
"""

from __future__ import annotations

import logging
from pathlib import Path

from translator import run_dir as rd
from translator.batching import sampler_for
from translator.config import Config
from translator.corpus import prepare
from translator.evaluate import references_for
from translator.sources import read_texts

log = logging.getLogger("translator")


class TrainingData:
    def __init__(self, cfg: Config, dist) -> None:
        d = cfg.data
        self.cfg, self.dist = cfg, dist
        self.corpus = prepare(cfg)
        self.src_vocab, self.tgt_vocab = self.corpus.src_vocab, self.corpus.tgt_vocab
        self.subword = self.corpus.subword
        self.use_train(self.corpus.splits[d.train_split], log_dropped=True)
        self.valid_pairs, _ = self.corpus.splits[d.valid_split].filter_length(
            cfg.model.max_positions - 2
        )
        src, refs = read_texts(cfg, d.valid_split)
        limit = cfg.train.valid_max_sentences
        self.valid_src, self.valid_refs = src[:limit], references_for(refs[:limit], d.lowercase)

    def check_same_vocabularies(self, run_dir: Path) -> None:
        """A resumed run must read and write the ids it was trained with."""
        saved = (
            rd.Vocab.from_file(run_dir / rd.SRC_VOCAB),
            rd.Vocab.from_file(run_dir / rd.TGT_VOCAB),
        )
        if saved != (self.src_vocab, self.tgt_vocab):
            raise rd.RunError(
                f"the data now gives other vocabularies than {run_dir} was trained with; "
                "cannot resume"
            )

    def use_train(self, pairs, log_dropped: bool = False) -> None:
        d = self.cfg.data
        self.train_pairs, dropped = pairs.filter_length(d.max_len)
        if dropped and log_dropped:
            log.info(
                "dropped %d training pairs with an empty side or over %d tokens", dropped, d.max_len
            )
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

    def resample_segmentation(self) -> None:
        """BPE-dropout: segment train anew for this epoch; all ranks take rank 0's sample, so that
        they agree on the batches (a resumed epoch samples anew)."""
        main = self.dist.is_main
        sampled = self.corpus.sample_train(self.cfg.vocab.bpe_dropout) if main else None
        self.use_train(self.dist.broadcast(sampled))
