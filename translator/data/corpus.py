"""The prepared corpus: tokenized, numericalized splits and their vocabularies, cached on disk.

    corpus = prepare(cfg)              # cold: read, tokenize, build vocab, save; warm: open
    corpus.splits["train"].src[0]      # np.int32 ids of the first source sentence
    corpus.src_vocab, corpus.tgt_vocab
    corpus.subword                     # the source-side BPE (vocab.kind: bpe), else None
    corpus.shortlist                   # likely target tokens of each source token (decoding)
    corpus.stats                       # what `prepare` counted: pairs, cleaning, overlap, OOV
    corpus.sample_train(dropout=0.1)   # train segmented anew (vocab.bpe_dropout > 0 only)

The cache folder is keyed by a hash of the source's fingerprint (file checksums, sizes and dates,
or the Hub dataset's fingerprint) and every setting that changes the ids (languages, lowercasing,
cleaning, vocabulary options, spaCy and tokenizers versions), so a changed setting never reuses
stale ids and a second `prepare` with the same settings only opens files. Each side of a split is
one flat int32 .npy of ids plus int64 offsets; a large ids file stays on disk and batches read
their sentences from it (`DiskIds`): opening costs no time, and memory is the same whatever the
corpus size. Batching slices the ids without per-token Python work.
`translator.data.preparation` builds the folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from translator.config import Config
from translator.data.bundle import check_parent, read_bundle
from translator.data.multi30k import user_cache_dir
from translator.data.preparation import (
    FORMAT_VERSION,
    WORDS_FILE,
    build,
    check_languages,
    split_stems,
)
from translator.data.shortlist import Shortlist
from translator.data.sources import as_files, ensure_available, fingerprint
from translator.data.subword import Subword
from translator.data.vocab import Vocab
from translator.run_dir import SHORTLIST, TGT_SUBWORD, RunError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IdArray:
    """Variable-length id sequences stored flat: sentence i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # (total_tokens,) int32; a DiskIds for a large file
    offsets: np.ndarray  # (n + 1,) int64

    @classmethod
    def from_lists(cls, sequences: list[list[int]]) -> IdArray:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.zeros(len(sequences) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        ids = np.fromiter((i for s in sequences for i in s), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        return self.ids[self.offsets[i] : self.offsets[i + 1]]

    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __add__(self, other: IdArray) -> IdArray:
        ids = np.concatenate([np.asarray(self.ids), np.asarray(other.ids)])
        return IdArray(ids, np.concatenate([self.offsets, self.offsets[-1] + other.offsets[1:]]))

    def select(self, indices: np.ndarray) -> IdArray:
        """The sequences at `indices`, copied into memory (from a large file, only those:
        one read each)."""
        lengths = self.lengths()[indices]
        offsets = np.zeros(len(indices) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        if isinstance(self.ids, DiskIds):
            starts = self.offsets[:-1][indices]
            parts = [self.ids[start : start + n] for start, n in zip(starts, lengths, strict=True)]
            return IdArray(np.concatenate(parts) if parts else np.zeros(0, np.int32), offsets)
        # position j of the output reads ids[start of its sequence + j - start of its output]
        shift = np.repeat(self.offsets[:-1][indices] - offsets[:-1], lengths)
        return IdArray(np.asarray(self.ids)[shift + np.arange(offsets[-1])], offsets)


@dataclass(frozen=True)
class ParallelIds:
    src: IdArray
    tgt: IdArray

    def __len__(self) -> int:
        return len(self.src)

    def __add__(self, other: ParallelIds) -> ParallelIds:
        """These pairs, then `other`'s, in memory."""
        return ParallelIds(self.src + other.src, self.tgt + other.tgt)

    def select(self, indices: np.ndarray) -> ParallelIds:
        return ParallelIds(self.src.select(indices), self.tgt.select(indices))

    def filter_length(self, max_len: int) -> tuple[ParallelIds, int]:
        """Drop pairs with an empty side or a side longer than `max_len`; return kept, dropped."""
        src_len, tgt_len = self.src.lengths(), self.tgt.lengths()
        keep = (src_len > 0) & (tgt_len > 0) & (src_len <= max_len) & (tgt_len <= max_len)
        if keep.all():
            return self, 0
        return self.select(np.flatnonzero(keep)), int((~keep).sum())


@dataclass
class Corpus:
    src_vocab: Vocab
    tgt_vocab: Vocab
    splits: dict[str, ParallelIds]  # keyed by the names used in the config (train, val, ...)
    path: Path
    cached: bool  # True when loaded from an existing cache
    stats: dict = field(default_factory=dict)  # meta.json: counts of every preparation step
    subword: Subword | None = None  # segments source tokens into the vocabulary's pieces
    tgt_subword: Subword | None = None  # separate BPEs, or BPE-dropout: the target side's
    shortlist: Shortlist | None = None  # target tokens likely for each source token

    def sample_train(self, dropout: float) -> ParallelIds:
        """The training split with a freshly sampled BPE-dropout segmentation on both sides.

        The `tokenizers` library draws the dropped merges from its own generator: train.seed does
        not fix them."""
        if self.tgt_subword is None:
            raise ValueError("this corpus was prepared without vocab.bpe_dropout")
        src_words, tgt_words = self._train_words
        src = self.subword.segment(src_words, dropout)
        tgt = self.tgt_subword.segment(tgt_words, dropout)
        return ParallelIds(
            IdArray.from_lists([self.src_vocab.encode(pieces) for pieces in src]),
            IdArray.from_lists([self.tgt_vocab.encode(pieces) for pieces in tgt]),
        )

    @cached_property
    def _train_words(self) -> tuple[list[list[str]], list[list[str]]]:
        """Read on first use: only the rank that samples needs them."""
        src, tgt = json.loads((self.path / WORDS_FILE).read_text(encoding="utf-8"))
        return src, tgt


def cache_root(cfg: Config) -> Path:
    chosen = cfg.data.cache_dir or os.environ.get("TRANSLATOR_CACHE_DIR")
    return Path(chosen).expanduser() if chosen else user_cache_dir() / "prepared"


def prepare(cfg: Config, numbered_as: Path | None = None) -> Corpus:
    """Open the cached corpus for `cfg`, building it first when missing.

    `numbered_as`: a run dir (a resumed run's own) whose vocabularies and BPE the ids must be:
    the cache is used when it gives exactly those; otherwise the corpus is built with the run's
    files, never with newly learned ones, so a run continues without the cache that made it."""
    check_languages(cfg)
    ensure_available(cfg, list(split_stems(cfg)))
    given = _parent_vocabulary(cfg)
    folder = cache_root(cfg) / _cache_key(cfg, given)
    if (folder / "meta.json").exists():
        corpus = _load(folder, cached=True)
        if numbered_as is None or _numbers_like(corpus, read_bundle(numbered_as)):
            return corpus
    if numbered_as is not None:
        given = _own_vocabulary(numbered_as)
        folder = cache_root(cfg) / _cache_key(cfg, given)
        if (folder / "meta.json").exists():
            return _load(folder, cached=True)
        log.info("building the corpus with the vocabularies and BPE of %s", numbered_as)
    build(cfg, folder, log=log.info, given=given)
    return _load(folder, cached=False)


def _numbers_like(corpus: Corpus, run) -> bool:
    """Whether `corpus` gives the ids `run` (a bundle) was trained with."""
    bpe = run.subword.to_str() if run.subword else None
    ours = corpus.subword.to_str() if corpus.subword else None
    return (corpus.src_vocab, corpus.tgt_vocab, ours) == (run.src_vocab, run.tgt_vocab, bpe)


def _own_vocabulary(run_dir: Path):
    """A run's bundle, to number its corpus with; refused where the run dir lacks a side."""
    run = read_bundle(run_dir)
    v = run.cfg.vocab
    lacks_target = not v.joint and run.tgt_subword is None  # made before both sides were kept
    if v.kind == "bpe" and (lacks_target or v.bpe_dropout):
        what = "BPE-dropout's training words" if v.bpe_dropout else "the target side's BPE"
        raise RunError(
            f"the prepared corpus of {run_dir} is gone and its run dir lacks {what}: it cannot "
            "be rebuilt from the run's files; prepare with the same data and settings, or "
            "restore the cache"
        )
    return run


def _parent_vocabulary(cfg: Config):
    """With train.init_from: that run's bundle, whose BPE and vocabularies number this corpus."""
    if not cfg.train.init_from:
        return None
    return check_parent(Path(cfg.train.init_from))


def _cache_key(cfg: Config, given=None) -> str:
    d, v = cfg.data, cfg.vocab
    settings = {
        "format": FORMAT_VERSION,
        "spacy": _version("spacy"),
        "source": d.source,
        "splits": {name: fingerprint(cfg, name) for name in split_stems(cfg)},
        "extra_train": [fingerprint(as_files(cfg), path) for path in d.extra_train],
        "roles": [d.train_split, d.valid_split, d.test_split],
        "langs": [d.src_lang, d.tgt_lang],
        "columns": d.columns,
        "lowercase": d.lowercase,
        "cleaning": [d.max_len, d.max_ratio, d.dedup],
        "vocab": [v.kind, v.joint, v.min_freq, v.max_size, v.bpe_size, v.train_sentences],
        "tokenizers": _version("tokenizers") if v.kind == "bpe" else None,
        "sampled_bpe": v.kind == "bpe" and v.bpe_dropout > 0,  # every piece, train's words kept
        "given_vocab": _vocabulary_hash(given) if given else None,
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def _vocabulary_hash(run) -> str:
    parts = [run.src_vocab.itos, run.tgt_vocab.itos, run.subword.to_str() if run.subword else None]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load(folder: Path, cached: bool) -> Corpus:
    meta = json.loads((folder / "meta.json").read_text())
    splits = {
        name: ParallelIds(
            _open(folder / f"{info['file']}.src"), _open(folder / f"{info['file']}.tgt")
        )
        for name, info in meta["splits"].items()
    }
    return Corpus(
        src_vocab=Vocab.from_file(folder / "vocab.src.json"),
        tgt_vocab=Vocab.from_file(folder / "vocab.tgt.json"),
        splits=splits,
        path=folder,
        cached=cached,
        stats=meta,
        subword=_load_subword(folder / Subword.FILE),
        tgt_subword=_load_subword(folder / TGT_SUBWORD),
        shortlist=_load_shortlist(folder / SHORTLIST),
    )


def _load_shortlist(path: Path) -> Shortlist | None:
    return Shortlist.from_file(path) if path.exists() else None


READ_WHOLE_BYTES = 64 << 20  # ids files up to this size are read into memory when opened


def _open(stem: Path) -> IdArray:
    offsets = np.load(f"{stem}.offsets.npy")
    path = Path(f"{stem}.ids.npy")
    ids = np.load(path) if path.stat().st_size <= READ_WHOLE_BYTES else DiskIds(path)
    return IdArray(ids, offsets)


class DiskIds:
    """A large flat .npy of int32 ids, read a slice at a time with pread.

    A memory map would do the same with less code, but every page a batch touches (and the
    pages the kernel maps around it) would stay counted in the process's memory: over an epoch,
    the whole file. Read with pread, the file lives in the page cache, shared and reclaimable,
    and the process's memory is the same whatever the corpus size. A sentence costs a system
    call (~2 us; a training step takes ~100,000 times longer)."""

    def __init__(self, path: Path):
        header = np.load(path, mmap_mode="r")  # reads the header only
        self.path, self.size, self._start = path, header.size, header.offset
        self.dtype = header.dtype
        del header
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: slice) -> np.ndarray:
        start, stop, step = index.indices(self.size)
        if step != 1:
            raise IndexError("DiskIds reads contiguous slices only")
        width = self.dtype.itemsize
        data = os.pread(self._fd, (stop - start) * width, self._start + start * width)
        return np.frombuffer(data, dtype=self.dtype)

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return np.fromfile(self.path, dtype=self.dtype, offset=self._start).astype(
            dtype or self.dtype
        )

    def __del__(self) -> None:
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)


def _load_subword(path: Path) -> Subword | None:
    return Subword.from_file(path) if path.exists() else None
