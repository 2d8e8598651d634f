"""Stage 4 of preparing a corpus: the BPE and vocabularies learned from the sampled training
pairs (or taken from a trained run, for `--init-from`), and the encoders that turn tokens into
ids with them.

    learned = LearnedVocab(cfg, train, sample)   # sample: row indices; given=run: a run's, as is
    ids = learned.encoders["src"](tokens)                 # BPE piece ids, or vocabulary ids
    learned.count("src", ids, lengths, rows)              # BPE: rank pieces by their use
    src_vocab, tgt_vocab = learned.finish()
"""

from __future__ import annotations

from collections import Counter
from itertools import chain
from pathlib import Path

import numpy as np

from translator.config import Config
from translator.data.arrow_passes import record_batches
from translator.data.subword import Subword
from translator.data.vocab import SPECIALS, Vocab, build_vocab
from translator.run_dir import TGT_SUBWORD


class LearnedVocab:
    """The BPE and/or vocabularies learned from the sampled training pairs; encodes tokens."""

    def __init__(self, cfg: Config, train, sample: np.ndarray, given=None):
        v = cfg.vocab
        self.kind, self.joint = v.kind, v.joint
        self.sampled = v.kind == "bpe" and v.bpe_dropout > 0
        rows = np.zeros(len(train), dtype=bool)
        rows[sample] = True
        self.sample_rows = rows
        lists = lambda column: _token_lists(train, column, rows)  # noqa: E731
        self.given = given is not None
        if given is not None:
            self._use(given, lists)
            return
        if v.kind == "bpe":
            words = lambda *columns: _distinct_tokens(train, columns, rows)  # noqa: E731
            if v.joint:
                both = chain(lists("src_tokens"), lists("tgt_tokens"))
                words_of_both = words("src_tokens", "tgt_tokens")
                self.src_bpe = Subword.train(both, v.bpe_size, words_of_both)
                self.tgt_bpe = self.src_bpe
            else:
                self.src_bpe = Subword.train(lists("src_tokens"), v.bpe_size, words("src_tokens"))
                self.tgt_bpe = Subword.train(lists("tgt_tokens"), v.bpe_size, words("tgt_tokens"))
            self.encoders = {"src": self.src_bpe.encode_ids, "tgt": self.tgt_bpe.encode_ids}
            self.counts = {
                "src": np.zeros(len(self.src_bpe.all_pieces()), dtype=np.int64),
                "tgt": np.zeros(len(self.tgt_bpe.all_pieces()), dtype=np.int64),
            }
            return
        if v.joint:
            self.src_vocab = self.tgt_vocab = build_vocab(
                chain(lists("src_tokens"), lists("tgt_tokens")), v.min_freq, v.max_size
            )
        else:
            self.src_vocab = build_vocab(lists("src_tokens"), v.min_freq, v.max_size)
            self.tgt_vocab = build_vocab(lists("tgt_tokens"), v.min_freq, v.max_size)
        self.encoders = {"src": self.src_vocab.encode_many, "tgt": self.tgt_vocab.encode_many}
        self.counts = None

    def _use(self, run, lists) -> None:
        """Number with a trained run's vocabularies and (joint) BPE, as they are; count the
        characters of train they have never seen, which can only become <unk>."""
        self.src_vocab, self.tgt_vocab = run.src_vocab, run.tgt_vocab
        if self.kind == "bpe":
            self.src_bpe, self.tgt_bpe = run.subword, run.tgt_subword or run.subword
            self.encoders = {"src": self.src_bpe.encode_ids, "tgt": self.tgt_bpe.encode_ids}
            known = {"src": self.src_bpe.all_pieces(), "tgt": self.tgt_bpe.all_pieces()}
        else:
            self.encoders = {"src": self.src_vocab.encode_many, "tgt": self.tgt_vocab.encode_many}
            known = {"src": self.src_vocab.itos, "tgt": self.tgt_vocab.itos}
        self.counts = None
        self.unseen = {}
        for side, column in (("src", "src_tokens"), ("tgt", "tgt_tokens")):
            alphabet = set("".join(known[side]))
            chars = Counter(c for tokens in lists(column) for token in tokens for c in token)
            missing = sorted(((n, c) for c, n in chars.items() if c not in alphabet), reverse=True)
            self.unseen[side] = {c: n for n, c in missing[:20]}

    def count(self, side: str, ids: np.ndarray, lengths: np.ndarray, rows: np.ndarray) -> None:
        """Count BPE pieces of the sampled training rows (the vocabulary is ranked by them)."""
        if self.counts is not None:
            counts = self.counts[side]
            counts += np.bincount(ids[np.repeat(rows, lengths)], minlength=len(counts))

    def finish(self) -> tuple[Vocab, Vocab]:
        """The vocabularies; for BPE, the pieces the sampled training pairs use, by frequency,
        then every other piece the BPE can make: text the sample never held (the rest of train,
        BPE-dropout's resegmentations, a fine-tune's new domain) then meets no <unk> for
        characters the BPE knows."""
        if self.kind == "bpe" and not self.given:
            if self.joint:
                both = self.counts["src"] + self.counts["tgt"]
                self.src_vocab = self.tgt_vocab = _vocab_by_count(self.src_bpe, both)
            else:
                self.src_vocab = _vocab_by_count(self.src_bpe, self.counts["src"])
                self.tgt_vocab = _vocab_by_count(self.tgt_bpe, self.counts["tgt"])
        return self.src_vocab, self.tgt_vocab

    def lookup(self, side: str) -> np.ndarray | None:
        """BPE piece id -> vocabulary id (None: the encoder gave vocabulary ids already)."""
        if self.kind != "bpe":
            return None
        bpe, vocab = (
            (self.src_bpe, self.src_vocab) if side == "src" else (self.tgt_bpe, self.tgt_vocab)
        )
        return np.array([vocab.stoi.get(p, vocab.unk_id) for p in bpe.all_pieces()], np.int32)

    def save(self, folder: Path) -> None:
        self.src_vocab.to_file(folder / "vocab.src.json")
        self.tgt_vocab.to_file(folder / "vocab.tgt.json")
        if self.kind == "bpe":
            self.src_bpe.to_file(folder / Subword.FILE)
            # Separate BPEs: the target side's too (a run dir keeps both); BPE-dropout
            # resegments train every epoch with it.
            if self.sampled or self.tgt_bpe is not self.src_bpe:
                self.tgt_bpe.to_file(folder / TGT_SUBWORD)


def _distinct_tokens(ds, columns: tuple[str, ...], rows: np.ndarray) -> set[str]:
    """Every distinct token of `columns` in the selected rows (found by Arrow, not Python)."""
    import pyarrow.compute as pc

    words: set[str] = set()
    for column in columns:
        for token_lists in _selected(ds, column, rows):
            words.update(pc.unique(pc.list_flatten(token_lists)).to_pylist())
    return words


def _token_lists(ds, column: str, rows: np.ndarray):
    for token_lists in _selected(ds, column, rows):
        yield from token_lists.to_pylist()


def _selected(ds, column: str, rows: np.ndarray):
    """`column`'s Arrow arrays of the selected rows, a record batch at a time."""
    for start, batch in record_batches(ds, [column]):
        yield batch.column(0).filter(rows[start : start + batch.num_rows])


def _vocab_by_count(bpe: Subword, counts: np.ndarray) -> Vocab:
    """Specials, the used pieces by count (ties by text), then the unused ones in BPE order."""
    pieces = bpe.all_pieces()
    used = [p for i, p in enumerate(pieces) if counts[i] > 0 and p not in SPECIALS]
    count = {p: counts[i] for i, p in enumerate(pieces)}
    ranked = sorted(used, key=lambda p: (-count[p], p))
    seen = set(ranked)
    ranked += [p for p in pieces if p not in seen and p not in SPECIALS]
    return Vocab(list(SPECIALS) + ranked)
