"""The prepared corpus: tokenized, numericalized splits and their vocabularies, cached on disk.

    corpus = prepare(cfg)              # cold: read, tokenize, build vocab, save; warm: load
    corpus.splits["train"].src[0]      # np.int32 ids of the first source sentence
    corpus.src_vocab, corpus.tgt_vocab
    corpus.subword                     # the source-side BPE (vocab.kind: bpe), else None
    corpus.sample_train(dropout=0.1)   # train segmented anew (vocab.bpe_dropout > 0 only)

The cache folder is keyed by a hash of the input files and every setting that changes the ids
(languages, lowercasing, vocabulary options, spaCy version), so a changed setting never reuses stale
ids and a second `prepare` with the same settings only loads a few flat numpy arrays. Each side of a
split is stored as one flat int32 array of ids plus int64 offsets: loading is a memory copy, and
batching slices it without any per-token Python work.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from translator.config import Config
from translator.data import canonical_split, data_dir, read_parallel, sha256_of, user_cache_dir
from translator.files import atomic_write_text
from translator.subword import Subword
from translator.vocab import Vocab, build_vocab

FORMAT_VERSION = 2  # bump when the cached layout or the tokenization scheme changes
# Both written only with BPE-dropout (vocab.bpe_dropout > 0), which resegments train every epoch:
TGT_SUBWORD_FILE = "subword.tgt.json"  # the target-side BPE (the same as the source's if joint)
WORDS_FILE = "train.words.json"  # the training split's spaCy tokens, [source, target]


@dataclass(frozen=True)
class IdArray:
    """Variable-length id sequences stored flat: sentence i is ids[offsets[i]:offsets[i+1]]."""

    ids: np.ndarray  # (total_tokens,) int32
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

    def select(self, indices: np.ndarray) -> IdArray:
        return IdArray.from_lists([self[i].tolist() for i in indices])


@dataclass(frozen=True)
class ParallelIds:
    src: IdArray
    tgt: IdArray

    def __len__(self) -> int:
        return len(self.src)

    def filter_length(self, max_len: int) -> tuple[ParallelIds, int]:
        """Drop pairs with an empty side or a side longer than `max_len`; return kept, dropped."""
        src_len, tgt_len = self.src.lengths(), self.tgt.lengths()
        keep = (src_len > 0) & (tgt_len > 0) & (src_len <= max_len) & (tgt_len <= max_len)
        if keep.all():
            return self, 0
        indices = np.flatnonzero(keep)
        return ParallelIds(self.src.select(indices), self.tgt.select(indices)), int((~keep).sum())


@dataclass
class Corpus:
    src_vocab: Vocab
    tgt_vocab: Vocab
    splits: dict[str, ParallelIds]  # keyed by the names used in the config (train, val, ...)
    path: Path
    cached: bool  # True when loaded from an existing cache
    subword: Subword | None = None  # segments source tokens into the vocabulary's pieces
    tgt_subword: Subword | None = None  # kept only for BPE-dropout (vocab.bpe_dropout > 0)

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


def split_names(cfg: Config) -> dict[str, str]:
    """Config name -> official split name, for the splits `prepare` handles."""
    d = cfg.data
    return {
        name: canonical_split(name)
        for name in dict.fromkeys([d.train_split, d.valid_split, d.test_split])
    }


def prepare(cfg: Config) -> Corpus:
    """Load the cached corpus for `cfg`, building it first when missing."""
    d = cfg.data
    texts = {
        name: read_parallel(split, d.src_lang, d.tgt_lang, d.dir, d.verify_checksums)
        for name, split in split_names(cfg).items()
    }
    folder = cache_root(cfg) / _cache_key(cfg)
    if (folder / "meta.json").exists():
        return _load(folder, cached=True)
    _build(cfg, texts, folder)
    return _load(folder, cached=False)


def _cache_key(cfg: Config) -> str:
    d, v = cfg.data, cfg.vocab
    folder = data_dir(d.dir)
    files = {
        f"{split}.{lang}": sha256_of(folder / f"{split}.{lang}.gz")
        for split in split_names(cfg).values()
        for lang in (d.src_lang, d.tgt_lang)
    }
    settings = {
        "format": FORMAT_VERSION,
        "spacy": importlib.metadata.version("spacy"),
        "splits": split_names(cfg),
        "langs": [d.src_lang, d.tgt_lang],
        "lowercase": d.lowercase,
        "vocab": [v.kind, v.joint, v.min_freq, v.max_size, v.bpe_size],
        "tokenizers": _version("tokenizers") if v.kind == "bpe" else None,
        "files": files,
    }
    if v.kind == "bpe" and v.bpe_dropout:  # keyed only when on, so that existing caches stay valid
        settings["sampled_bpe"] = True  # every piece in the vocabulary, train's words kept
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _build(cfg: Config, texts: dict[str, tuple[list[str], list[str]]], folder: Path) -> None:
    from translator.tokenization import Tokenizer

    d, v = cfg.data, cfg.vocab
    src_tok, tgt_tok = Tokenizer(d.src_lang, d.lowercase), Tokenizer(d.tgt_lang, d.lowercase)
    tokens = {
        name: (src_tok.tokenize(src), tgt_tok.tokenize(tgt)) for name, (src, tgt) in texts.items()
    }
    words = tokens[d.train_split]
    subword = tgt_subword = None
    if v.kind == "bpe":
        tokens, subword, tgt_subword = _segment(tokens, d.train_split, v.bpe_size, v.joint)
    train_src, train_tgt = tokens[d.train_split]
    # Every BPE piece seen in train stays: the BPE already chose the vocabulary size.
    min_freq, max_size = (1, None) if v.kind == "bpe" else (v.min_freq, v.max_size)
    if v.joint:
        src_vocab = tgt_vocab = build_vocab(train_src + train_tgt, min_freq, max_size)
    else:
        src_vocab = build_vocab(train_src, min_freq, max_size)
        tgt_vocab = build_vocab(train_tgt, min_freq, max_size)
    sampled = v.kind == "bpe" and v.bpe_dropout > 0
    if sampled:  # dropped merges give pieces the full segmentation of train never uses
        src_vocab, tgt_vocab = (
            _with_all_pieces(src_vocab, subword),
            _with_all_pieces(tgt_vocab, tgt_subword),
        )

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        src_vocab.to_file(tmp / "vocab.src.json")
        tgt_vocab.to_file(tmp / "vocab.tgt.json")
        if subword is not None:
            subword.to_file(tmp / Subword.FILE)
        if sampled:
            tgt_subword.to_file(tmp / TGT_SUBWORD_FILE)
            atomic_write_text(tmp / WORDS_FILE, json.dumps(words, ensure_ascii=False))
        for name, (src, tgt) in tokens.items():
            src_ids = IdArray.from_lists([src_vocab.encode(t) for t in src])
            tgt_ids = IdArray.from_lists([tgt_vocab.encode(t) for t in tgt])
            np.savez(
                tmp / f"{name}.npz",
                src_ids=src_ids.ids,
                src_offsets=src_ids.offsets,
                tgt_ids=tgt_ids.ids,
                tgt_offsets=tgt_ids.offsets,
            )
        meta = {"format": FORMAT_VERSION, "splits": list(tokens), "created": time.time()}
        (tmp / "meta.json").write_text(json.dumps(meta))
        try:
            os.replace(tmp, folder)  # the folder appears complete or not at all
        except OSError:
            if not (folder / "meta.json").exists():  # not a concurrent prepare that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _segment(
    tokens: dict, train_split: str, size: int, joint: bool
) -> tuple[dict, Subword, Subword]:
    """Learn BPE on the training tokens (one for both sides if `joint`) and segment every split.

    Returns the segmented splits and the source- and target-side BPEs (one object if `joint`).
    """
    train_src, train_tgt = tokens[train_split]
    if joint:
        src_bpe = tgt_bpe = Subword.train(train_src + train_tgt, size)
    else:
        src_bpe, tgt_bpe = Subword.train(train_src, size), Subword.train(train_tgt, size)
    segmented = {
        name: (src_bpe.segment(src), tgt_bpe.segment(tgt)) for name, (src, tgt) in tokens.items()
    }
    return segmented, src_bpe, tgt_bpe


def _with_all_pieces(vocab: Vocab, subword: Subword) -> Vocab:
    seen = set(vocab.stoi)
    return Vocab(vocab.itos + [piece for piece in subword.pieces() if piece not in seen])


def _load(folder: Path, cached: bool) -> Corpus:
    meta = json.loads((folder / "meta.json").read_text())
    splits = {}
    for name in meta["splits"]:
        with np.load(folder / f"{name}.npz") as arrays:
            splits[name] = ParallelIds(
                IdArray(arrays["src_ids"], arrays["src_offsets"]),
                IdArray(arrays["tgt_ids"], arrays["tgt_offsets"]),
            )
    return Corpus(
        src_vocab=Vocab.from_file(folder / "vocab.src.json"),
        tgt_vocab=Vocab.from_file(folder / "vocab.tgt.json"),
        splits=splits,
        path=folder,
        cached=cached,
        subword=_load_subword(folder / Subword.FILE),
        tgt_subword=_load_subword(folder / TGT_SUBWORD_FILE),
    )


def _load_subword(path: Path) -> Subword | None:
    return Subword.from_file(path) if path.exists() else None


def summarize(corpus: Corpus) -> dict[str, dict]:
    """Per split: pairs, tokens per side, and the share of tokens the vocabulary maps to <unk>."""
    unk_src, unk_tgt = corpus.src_vocab.unk_id, corpus.tgt_vocab.unk_id
    return {
        name: {
            "pairs": len(pairs),
            "src_tokens": len(pairs.src.ids),
            "tgt_tokens": len(pairs.tgt.ids),
            "src_oov": float(np.mean(pairs.src.ids == unk_src)) if len(pairs.src.ids) else 0.0,
            "tgt_oov": float(np.mean(pairs.tgt.ids == unk_tgt)) if len(pairs.tgt.ids) else 0.0,
        }
        for name, pairs in corpus.splits.items()
    }
