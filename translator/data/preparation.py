"""Build a prepared corpus folder: read, clean, tokenize, learn the vocabulary, write flat ids.

    stats = build(cfg, folder)   # called by corpus.prepare when the cache has no such folder

Each stage holds a bounded amount in memory, whatever the corpus size: text and tokens stay in the
Arrow files `datasets` writes, work is done in batches, and what is kept per pair in memory is a
few numbers (lengths, 64-bit hashes). Our own passes over those files read them batch by batch
instead of memory-mapping them, so the pages read do not pile up in the process's memory.

1. read      sources.load_split: the split as an Arrow table of src and tgt text
2. tokenize  Dataset.map (arrow_passes.py), batched, over data.num_proc processes: Unicode
             NFC, BOMs and stray whitespace removed, lowercased if asked, spaCy tokens with
             joiner marks, and a hash of each cleaned side (for duplicates and overlap)
3. filter    train only, from those numbers: empty sides, exact duplicates (data.dedup)
4. learn     the BPE and the vocabulary from at most vocab.train_sentences sampled training
             pairs (vocab_learning.py)
5. encode    tokens -> ids, streamed to flat files (BPE piece ids, mapped to vocabulary ids on
             write; a word's pieces are looked up once, so one process keeps pace)
6. filter    train only, from id lengths: over data.max_len, over data.max_ratio
7. write     per split and side, flat int32 ids and int64 offsets as .npy files (read whole on
             load, or slice by slice with pread when large: corpus.DiskIds), and meta.json
             with the count of every step, val/test overlap with train, OOV rates and the
             seconds each stage took.
8. shortlist the lexical shortlist learned from the written training ids (shortlist.py): the
             target tokens each source token is likely to become, for decoding

Everything is written into a temp folder beside `folder` and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np

from translator.config import Config, ConfigError
from translator.data.arrow_passes import (
    list_lengths,
    map_batches,
    numpy_column,
    record_batches,
    worker_count,
)
from translator.data.multi30k import DataError
from translator.data.shortlist import learn_shortlist
from translator.data.sources import describe, load_split, load_train_split
from translator.data.tokenization import BOM, check_language, clean
from translator.data.vocab_learning import LearnedVocab
from translator.files import atomic_folder, atomic_write_text
from translator.run_dir import SHORTLIST

FORMAT_VERSION = 6  # bump when the cached layout or tokenization changes (6: every BPE piece)
WORDS_FILE = "train.words.json"  # with BPE-dropout: the training split's spaCy tokens
SAMPLE_SEED = 0  # the pairs the vocabulary is learned from (not train.seed: no re-prepare)
CHUNK_ROWS = 100_000  # rows per numpy pass over an Arrow column
# Flags of the tokenize stage, per pair: what cleaning changed (summed in the summary).
FIX_BOM, FIX_NFC, FIX_SPACE = 1, 2, 4


def split_stems(cfg: Config) -> dict[str, str]:
    """Configured split name -> its file stem in the cache (train, valid, test)."""
    d = cfg.data
    stems: dict[str, str] = {}
    for name, stem in ((d.train_split, "train"), (d.valid_split, "valid"), (d.test_split, "test")):
        stems.setdefault(name, stem)
    return stems


def check_languages(cfg: Config) -> None:
    """A language spaCy cannot tokenize is a bad setting, found before any data is read."""
    for key, lang in (("data.src_lang", cfg.data.src_lang), ("data.tgt_lang", cfg.data.tgt_lang)):
        try:
            check_language(lang)
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None


def build(cfg: Config, folder: Path, log=lambda message: None, given=None) -> None:
    """`given`: a run bundle (run_dir.Run) whose BPE and vocabularies number this corpus
    instead of ones learned from it (fine-tuning, train.init_from)."""
    d, v = cfg.data, cfg.vocab
    seconds: dict[str, float] = {}
    num_proc = d.num_proc or len(os.sched_getaffinity(0))
    # The folder appears complete or not at all.
    with atomic_folder(folder) as tmp:
        work = tmp / "work"  # datasets' Arrow files and our intermediate ids, removed at the end
        stems = split_stems(cfg)
        with _timed(seconds, "read"):
            train, extra = load_train_split(cfg, work)
            raw = {n: train if n == d.train_split else load_split(cfg, n, work) for n in stems}
        read = ", ".join(f"{stems[n]} {len(raw[n]):,}" for n in stems)
        if extra:
            read += f" (of which {sum(extra.values()):,} from data.extra_train)"
        log(
            f"read {read} pairs; "
            f"tokenizing with {worker_count(len(raw[d.train_split]), num_proc)} processes"
        )
        with _timed(seconds, "tokenize"):
            tokens = {
                name: map_batches(ds, _tokenize_batch, work / f"{stems[name]}.tokens.arrow",
                                  num_proc, src_lang=d.src_lang, tgt_lang=d.tgt_lang,
                                  lowercase=d.lowercase)
                for name, ds in raw.items()
            }  # fmt: skip
        train = tokens[d.train_split]
        keep, counts = _clean_filter(train, d.dedup)
        _require_pairs(keep, counts, d.train_split)
        sample = _sample(keep, v.train_sentences)
        if given is None:
            log(f"learning the vocabulary from {len(sample):,} training pairs")
        else:
            log(f"numbering with the vocabulary of {given.path}")
        with _timed(seconds, "learn"):
            learned = LearnedVocab(cfg, train, sample, given)
        log("encoding the ids")
        with _timed(seconds, "encode"):
            encoded = {
                name: _encode(ds, learned, work / stems[name], count=name == d.train_split)
                for name, ds in tokens.items()
            }
        learned.finish()
        keep, counts = _length_filter(encoded[d.train_split], keep, counts, d.max_len, d.max_ratio)
        _require_pairs(keep, counts, d.train_split)
        with _timed(seconds, "write"):
            learned.save(tmp)
            splits = {}
            for name, sides in encoded.items():
                rows = keep if name == d.train_split else None
                splits[name] = _write_split(sides, rows, tmp / stems[name], learned)
                splits[name].update(_fixes(tokens[name], rows))
            _overlap(tokens, d.train_split, keep, splits)
            if learned.sampled:
                _write_words(train, keep, tmp / WORDS_FILE)
        with _timed(seconds, "shortlist"):
            _write_shortlist(tmp / stems[d.train_split], learned, tmp / SHORTLIST)
        meta = {
            "format": FORMAT_VERSION,
            "source": describe(cfg),
            "splits": splits,
            "train_dropped": counts,
            **({"extra_train": extra} if extra else {}),
            "vocab_pairs": int(len(sample)),
            **({"vocab_from": str(given.path), "unseen_chars": learned.unseen} if given else {}),
            "seconds": {k: round(s, 2) for k, s in seconds.items()},
            "created": time.time(),
        }
        shutil.rmtree(work, ignore_errors=True)
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))


DROPPED = {"empty": "with an empty side", "duplicates": "duplicates",
           "too_long": "over data.max_len", "ratio": "over data.max_ratio"}  # fmt: skip


def _require_pairs(keep: np.ndarray, counts: dict, name: str) -> None:
    if not keep.any():
        what = ", ".join(f"{n:,} {DROPPED[why]}" for why, n in counts.items() if n) or "none read"
        raise DataError(f"the training split {name} has no pairs left after cleaning ({what})")


@contextmanager
def _timed(seconds: dict, stage: str):
    started = time.perf_counter()
    yield
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


# -- stage 2: tokenize (runs in worker processes) -------------------------------------------------

_tokenizers: dict = {}  # per process: spaCy tokenizers and encoders, loaded on first use


def _tokenize_batch(batch, src_lang: str, tgt_lang: str, lowercase: bool):
    import pyarrow as pa
    import xxhash

    from translator.data.tokenization import Tokenizer

    columns: dict = {}
    fixes = np.zeros(batch.num_rows, dtype=np.uint8)
    for side, lang in (("src", src_lang), ("tgt", tgt_lang)):
        key = ("spacy", lang, lowercase)
        if key not in _tokenizers:
            _tokenizers[key] = Tokenizer(lang, lowercase)
        texts = []
        for row, text in enumerate(batch.column(side).to_pylist()):
            text, flags = _clean_counted(text or "", lowercase)
            texts.append(text)
            fixes[row] |= flags
        tokens = _tokenizers[key].tokenize_normalized(texts)
        columns[f"{side}_tokens"] = pa.array(tokens, type=pa.list_(pa.string()))
        # 63-bit hashes: Arrow's and numpy's defaults are signed
        hashes = [xxhash.xxh3_64_intdigest(text.encode()) >> 1 for text in texts]
        columns[f"{side}_hash"] = pa.array(hashes, type=pa.int64())
    columns["fixes"] = pa.array(fixes)
    return pa.table(columns)


def _clean_counted(text: str, lowercase: bool) -> tuple[str, int]:
    """`tokenization.normalize`, with a note of what it changed."""
    flags = FIX_BOM if BOM in text else 0
    cleaned = clean(text)
    if len(cleaned) != len(text.replace(BOM, "").strip("\r\n")):
        flags |= FIX_NFC
    collapsed = " ".join(cleaned.split())
    if collapsed != cleaned:
        flags |= FIX_SPACE
    return (collapsed.lower() if lowercase else collapsed), flags


# -- stage 3: filter by text ---------------------------------------------------------------------


def _clean_filter(train, dedup: bool) -> tuple[np.ndarray, dict]:
    src_len, tgt_len = list_lengths(train, "src_tokens"), list_lengths(train, "tgt_tokens")
    keep = (src_len > 0) & (tgt_len > 0)
    counts = {"empty": int((~keep).sum()), "duplicates": 0, "too_long": 0, "ratio": 0}
    if dedup:
        rows = np.flatnonzero(keep)
        _, first = np.unique(_pair_hashes(train)[rows], return_index=True)
        keep = np.zeros_like(keep)
        keep[rows[first]] = True
        counts["duplicates"] = int(len(rows) - len(first))
    return keep, counts


def _pair_hashes(ds) -> np.ndarray:
    src, tgt = (numpy_column(ds, f"{side}_hash").astype(np.uint64) for side in ("src", "tgt"))
    return src * np.uint64(0x9E3779B97F4A7C15) ^ tgt  # wraps around: a 64-bit mix


def _sample(keep: np.ndarray, limit: int) -> np.ndarray:
    rows = np.flatnonzero(keep)
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(rows, limit, replace=False))


# -- stage 5: encode -------------------------------------------------------------------------------


def _encode(ds, learned: LearnedVocab, stem: Path, count: bool) -> dict:
    """Per side: ids appended to the flat file `stem`.<side>.raw, and every row's length.
    `count`: this is train, whose sampled rows' pieces rank the vocabulary."""
    lengths: dict = {"src": [], "tgt": []}
    files = {side: open(f"{stem}.{side}.raw", "wb") for side in lengths}
    try:
        for start, batch in record_batches(ds, ["src_tokens", "tgt_tokens"]):
            for i, side in enumerate(lengths):
                ids = learned.encoders[side](batch.column(i).to_pylist())
                row_lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
                flat = np.fromiter(chain.from_iterable(ids), np.int32, int(row_lengths.sum()))
                flat.tofile(files[side])
                lengths[side].append(row_lengths)
                if count:
                    rows = learned.sample_rows[start : start + batch.num_rows]
                    learned.count(side, flat, row_lengths, rows)
    finally:
        for f in files.values():
            f.close()
    return {
        side: (Path(f"{stem}.{side}.raw"), np.concatenate(parts or [np.zeros(0, np.int64)]))
        for side, parts in lengths.items()
    }


# -- stage 6: filter by length -------------------------------------------------------------------


def _length_filter(encoded_train: dict, keep, counts, max_len: int, max_ratio: float | None):
    src_len, tgt_len = encoded_train["src"][1], encoded_train["tgt"][1]
    long = keep & ((src_len > max_len) | (tgt_len > max_len))
    counts["too_long"] = int(long.sum())
    keep = keep & ~long
    if max_ratio is not None:
        longer, shorter = np.maximum(src_len, tgt_len), np.maximum(np.minimum(src_len, tgt_len), 1)
        skewed = keep & (longer > max_ratio * shorter)
        counts["ratio"] = int(skewed.sum())
        keep = keep & ~skewed
    return keep, counts


# -- stage 7: write -------------------------------------------------------------------------------


def _write_split(sides: dict, rows, stem: Path, learned: LearnedVocab) -> dict:
    stats = {"file": stem.name, "read": len(sides["src"][1])}
    for side, vocab in (("src", learned.src_vocab), ("tgt", learned.tgt_vocab)):
        raw, lengths = sides[side]
        n, tokens, unk = _write_side(raw, lengths, rows, learned.lookup(side), vocab.unk_id,
                                     Path(f"{stem}.{side}"))  # fmt: skip
        stats.update({"pairs": n, f"{side}_tokens": tokens, f"{side}_oov": unk / max(tokens, 1)})
    return stats


def _write_side(raw: Path, lengths, rows, lookup, unk_id: int, stem: Path) -> tuple[int, int, int]:
    """Write `stem`.ids.npy (flat int32) and `stem`.offsets.npy (int64, n + 1) for the kept rows,
    from the raw ids in chunks and with plain writes (no memory map: no dirty pages held);
    return pairs, tokens and <unk> tokens written."""
    kept = lengths if rows is None else lengths[rows]
    offsets = np.zeros(len(kept) + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    np.save(f"{stem}.offsets.npy", offsets)
    header = {"descr": np.dtype(np.int32).str, "fortran_order": False, "shape": (int(offsets[-1]),)}
    unk = 0
    with open(raw, "rb") as source, open(f"{stem}.ids.npy", "wb") as out:
        np.lib.format.write_array_header_1_0(out, header)
        for start in range(0, len(lengths), CHUNK_ROWS):
            chunk = lengths[start : start + CHUNK_ROWS]
            values = np.fromfile(source, dtype=np.int32, count=int(chunk.sum()))
            if rows is not None:
                values = values[np.repeat(rows[start : start + CHUNK_ROWS], chunk)]
            if lookup is not None:
                values = lookup[values]
            unk += int(np.count_nonzero(values == unk_id))
            out.write(values.tobytes())
    raw.unlink()
    return len(kept), int(offsets[-1]), unk


def _fixes(tokens, rows) -> dict:
    flags = numpy_column(tokens, "fixes")
    if rows is not None:
        flags = flags[rows]
    return {
        "bom": int(np.count_nonzero(flags & FIX_BOM)),
        "nfc": int(np.count_nonzero(flags & FIX_NFC)),
        "whitespace": int(np.count_nonzero(flags & FIX_SPACE)),
    }


def _overlap(tokens: dict, train_name: str, keep: np.ndarray, splits: dict) -> None:
    """For val and test: how many pairs, and source sentences, also occur in the training data."""
    train = tokens[train_name]
    train_pairs = _pair_hashes(train)[keep]
    train_sources = numpy_column(train, "src_hash")[keep]
    for name, ds in tokens.items():
        if name != train_name:
            splits[name]["overlap_pairs"] = int(np.isin(_pair_hashes(ds), train_pairs).sum())
            splits[name]["overlap_sources"] = int(
                np.isin(numpy_column(ds, "src_hash"), train_sources).sum()
            )


def _write_words(train, keep: np.ndarray, path: Path) -> None:
    """BPE-dropout resegments train's spaCy tokens every epoch (held in memory when training)."""
    src, tgt = [], []
    for batch in train.select(np.flatnonzero(keep)).iter(batch_size=10_000):
        src.extend(batch["src_tokens"])
        tgt.extend(batch["tgt_tokens"])
    atomic_write_text(path, json.dumps([src, tgt], ensure_ascii=False))


# -- stage 8: shortlist ----------------------------------------------------------------------------


def _write_shortlist(train: Path, learned: LearnedVocab, path: Path) -> None:
    """The lexical shortlist of the written training ids (decoding's smaller output layer)."""
    src, tgt = (
        (np.load(f"{train}.{side}.ids.npy", mmap_mode="r"), np.load(f"{train}.{side}.offsets.npy"))
        for side in ("src", "tgt")
    )
    vocab = learned.tgt_vocab
    shortlist = learn_shortlist(*src, *tgt, len(learned.src_vocab), len(vocab),
                                (vocab.unk_id, vocab.eos_id))  # fmt: skip
    shortlist.to_file(path)
