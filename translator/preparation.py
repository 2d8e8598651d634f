"""Build a prepared corpus folder: read, clean, tokenize, learn the vocabulary, write flat ids.

    stats = build(cfg, folder)   # called by corpus.prepare when the cache has no such folder

Each stage holds a bounded amount in memory, whatever the corpus size: text and tokens stay in
memory-mapped Arrow files that `datasets` writes, work is done in batches, and what is kept per
pair in memory is a few numbers (lengths, 64-bit hashes).

1. read      sources.load_split: the split as an Arrow table of src and tgt text
2. tokenize  Dataset.map, batched, over data.num_proc processes: Unicode NFC, BOMs and stray
             whitespace removed, lowercased if asked, spaCy tokens with joiner marks, and a hash
             of each cleaned side (for duplicates and overlap)
3. filter    train only, from those numbers: empty sides, exact duplicates (data.dedup)
4. learn     the BPE and the vocabulary from at most vocab.train_sentences sampled training pairs
5. encode    Dataset.map again: tokens -> ids (BPE piece ids, mapped to vocabulary ids on write)
6. filter    train only, from id lengths: over data.max_len, over data.max_ratio
7. write     per split and side, flat int32 ids and int64 offsets as .npy files (memory-mapped on
             load), and meta.json with the count of every step, val/test overlap with train, OOV
             rates and the seconds each stage took.

Everything is written into a temp folder beside `folder` and renamed into place at the end.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np

from translator.config import Config, ConfigError
from translator.data import DataError
from translator.files import atomic_write_text
from translator.sources import describe, load_split
from translator.subword import Subword
from translator.tokenization import BOM, check_language, clean
from translator.vocab import SPECIALS, Vocab, build_vocab

FORMAT_VERSION = 3  # bump when the cached layout or the tokenization scheme changes
TGT_SUBWORD_FILE = "subword.tgt.json"  # with BPE-dropout: the target-side BPE
WORDS_FILE = "train.words.json"  # with BPE-dropout: the training split's spaCy tokens
SAMPLE_SEED = 0  # the pairs the vocabulary is learned from (not train.seed: no re-prepare)
MAP_BATCH = 1000  # rows per Dataset.map call
CHUNK_ROWS = 100_000  # rows per numpy pass over an Arrow column
SMALL_SPLIT = 50_000  # rows below which one process tokenizes (starting workers costs more)
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


def build(cfg: Config, folder: Path, log=lambda message: None) -> None:
    d, v = cfg.data, cfg.vocab
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    work = tmp / "arrow"  # datasets' files, removed with tmp
    seconds: dict[str, float] = {}
    num_proc = d.num_proc or len(os.sched_getaffinity(0))
    try:
        stems = split_stems(cfg)
        with _timed(seconds, "read"):
            raw = {name: load_split(cfg, name, work) for name in stems}
        log(f"read {', '.join(f'{stems[n]} {len(ds):,}' for n, ds in raw.items())} pairs")
        with _timed(seconds, "tokenize"):
            tokens = {
                name: _map(ds, _tokenize_batch, work / f"{stems[name]}.tokens.arrow", num_proc,
                           src_lang=d.src_lang, tgt_lang=d.tgt_lang, lowercase=d.lowercase)
                for name, ds in raw.items()
            }  # fmt: skip
        train = tokens[d.train_split]
        keep, counts = _clean_filter(train, d.dedup)
        if not keep.any():
            raise DataError(
                f"the training split {d.train_split} has no pairs left after cleaning "
                f"({counts['empty']:,} with an empty side, {counts['duplicates']:,} duplicates)"
            )
        sample = _sample(keep, v.train_sentences)
        log(f"learning the vocabulary from {len(sample):,} training pairs")
        with _timed(seconds, "learn"):
            learned = _learn(cfg, train.select(sample) if len(sample) < len(train) else train, tmp)
        if num_proc > 1:  # the BPE learned with threads; forked workers must not (tokenizers warns)
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        with _timed(seconds, "encode"):
            encoded = {
                name: _map(ds, _encode_batch, work / f"{stems[name]}.ids.arrow", num_proc,
                           src_path=str(learned.src_path), tgt_path=str(learned.tgt_path),
                           kind=v.kind)
                for name, ds in tokens.items()
            }  # fmt: skip
        src_vocab, tgt_vocab = learned.finish(
            encoded[d.train_split], sample, len(sample) < keep.sum()
        )
        keep, counts = _length_filter(encoded[d.train_split], keep, counts, d.max_len, d.max_ratio)
        with _timed(seconds, "write"):
            src_vocab.to_file(tmp / "vocab.src.json")
            tgt_vocab.to_file(tmp / "vocab.tgt.json")
            splits = {}
            for name, ds in encoded.items():
                rows = keep if name == d.train_split else None
                splits[name] = _write_split(
                    ds, rows, tmp, stems[name], learned, src_vocab, tgt_vocab
                )
                splits[name].update(_fixes(tokens[name], rows))
            _overlap(tokens, d.train_split, keep, splits)
            if learned.sampled:
                _write_words(train, keep, tmp / WORDS_FILE)
        meta = {
            "format": FORMAT_VERSION,
            "source": describe(cfg),
            "splits": splits,
            "train_dropped": counts,
            "vocab_pairs": int(len(sample)),
            "seconds": {k: round(s, 2) for k, s in seconds.items()},
            "created": time.time(),
        }
        for path in (learned.src_path, learned.tgt_path):
            if path.name not in (Subword.FILE, TGT_SUBWORD_FILE):
                path.unlink(missing_ok=True)  # word kind: the encoder's vocab files, now final
        shutil.rmtree(work, ignore_errors=True)
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))
        try:
            os.replace(tmp, folder)  # the folder appears complete or not at all
        except OSError:
            if not (folder / "meta.json").exists():  # not a concurrent prepare that won the race
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _timed(seconds: dict, stage: str):
    started = time.perf_counter()
    yield
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def _map(ds, function, cache_file: Path, num_proc: int, **kwargs):
    """`ds.map(function)` over Arrow batches, writing its output to `cache_file` (not the
    source's cache: a Hub dataset's folder must not grow by our intermediate files). Batches go
    in and out as Arrow tables: no per-row conversion by `datasets`."""
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    return (
        ds.with_format("arrow")
        .map(
            function,
            batched=True,
            batch_size=MAP_BATCH,
            fn_kwargs=kwargs,
            remove_columns=ds.column_names,
            num_proc=num_proc if len(ds) >= SMALL_SPLIT and num_proc > 1 else None,
            cache_file_name=str(cache_file),
            load_from_cache_file=False,
            new_fingerprint=f"{cache_file.stem}-{time.time_ns()}",  # no hashing of the function
            desc=f"{cache_file.stem.replace('.', ' ')}",
        )
        .with_format(None)
    )


# -- stage 2: tokenize (runs in worker processes) -------------------------------------------------

_tokenizers: dict = {}  # per process: spaCy tokenizers and encoders, loaded on first use


def _tokenize_batch(batch, src_lang: str, tgt_lang: str, lowercase: bool):
    import pyarrow as pa
    import xxhash

    from translator.tokenization import Tokenizer

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
    src_len, tgt_len = _lengths(train, "src_tokens"), _lengths(train, "tgt_tokens")
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
    src, tgt = (_column(ds, f"{side}_hash").astype(np.uint64) for side in ("src", "tgt"))
    return src * np.uint64(0x9E3779B97F4A7C15) ^ tgt  # wraps around: a 64-bit mix


def _sample(keep: np.ndarray, limit: int) -> np.ndarray:
    rows = np.flatnonzero(keep)
    if len(rows) <= limit:
        return rows
    return np.sort(np.random.default_rng(SAMPLE_SEED).choice(rows, limit, replace=False))


# -- stage 4: learn --------------------------------------------------------------------------------


class _Learned:
    """What the encode stage needs (files its workers load) and how ids become vocabulary ids."""

    def __init__(self, cfg: Config, sample_ds, folder: Path):
        v = cfg.vocab
        self.kind, self.joint = v.kind, v.joint
        self.sampled = v.kind == "bpe" and v.bpe_dropout > 0
        if v.kind == "bpe":
            src_words, tgt_words = (
                _token_lists(sample_ds, "src_tokens"),
                _token_lists(sample_ds, "tgt_tokens"),
            )
            if v.joint:
                self.src_bpe = self.tgt_bpe = Subword.train(chain(src_words, tgt_words), v.bpe_size)
            else:
                self.src_bpe = Subword.train(src_words, v.bpe_size)
                self.tgt_bpe = Subword.train(tgt_words, v.bpe_size)
            self.src_path = folder / Subword.FILE
            self.src_bpe.to_file(self.src_path)
            self.tgt_path = self.src_path
            if self.sampled:  # kept for resegmenting train (the source side's is the run's)
                self.tgt_path = folder / TGT_SUBWORD_FILE
                self.tgt_bpe.to_file(self.tgt_path)
            elif not v.joint:
                self.tgt_path = folder / "encoder.tgt.json"
                self.tgt_bpe.to_file(self.tgt_path)
            return
        lists = lambda column: _token_lists(sample_ds, column)  # noqa: E731
        if v.joint:
            self.src_vocab = self.tgt_vocab = build_vocab(
                chain(lists("src_tokens"), lists("tgt_tokens")), v.min_freq, v.max_size
            )
        else:
            self.src_vocab = build_vocab(lists("src_tokens"), v.min_freq, v.max_size)
            self.tgt_vocab = build_vocab(lists("tgt_tokens"), v.min_freq, v.max_size)
        self.src_path, self.tgt_path = folder / "encoder.src.json", folder / "encoder.tgt.json"
        self.src_vocab.to_file(self.src_path)
        self.tgt_vocab.to_file(self.tgt_path)

    def finish(self, encoded_train, sample: np.ndarray, partial: bool) -> tuple[Vocab, Vocab]:
        """The vocabularies; for BPE, every piece the sampled training pairs use, by frequency.
        When the BPE saw only part of train (or BPE-dropout samples new segmentations), every
        other piece follows, so that no piece of the rest becomes <unk>."""
        if self.kind != "bpe":
            return self.src_vocab, self.tgt_vocab
        rows = np.zeros(len(encoded_train), dtype=bool)
        rows[sample] = True
        src_counts = _count_ids(encoded_train, "src_ids", rows, len(self.src_bpe.all_pieces()))
        tgt_counts = _count_ids(encoded_train, "tgt_ids", rows, len(self.tgt_bpe.all_pieces()))
        complete = partial or self.sampled
        if self.joint:
            vocab = _vocab_by_count(self.src_bpe, src_counts + tgt_counts, complete)
            self.src_vocab = self.tgt_vocab = vocab
        else:
            self.src_vocab = _vocab_by_count(self.src_bpe, src_counts, complete)
            self.tgt_vocab = _vocab_by_count(self.tgt_bpe, tgt_counts, complete)
        return self.src_vocab, self.tgt_vocab

    def lookup(self, side: str) -> np.ndarray | None:
        """BPE piece id -> vocabulary id (None: the encoder gave vocabulary ids already)."""
        if self.kind != "bpe":
            return None
        bpe, vocab = (
            (self.src_bpe, self.src_vocab) if side == "src" else (self.tgt_bpe, self.tgt_vocab)
        )
        return np.array([vocab.stoi.get(p, vocab.unk_id) for p in bpe.all_pieces()], np.int32)


def _learn(cfg: Config, sample_ds, folder: Path) -> _Learned:
    return _Learned(cfg, sample_ds.select_columns(["src_tokens", "tgt_tokens"]), folder)


def _token_lists(ds, column: str):
    for batch in ds.select_columns([column]).iter(batch_size=10_000):
        yield from batch[column]


def _vocab_by_count(bpe: Subword, counts: np.ndarray, complete: bool) -> Vocab:
    """What `build_vocab` gives for the segmented tokens, from piece counts."""
    pieces = bpe.all_pieces()
    used = [p for i, p in enumerate(pieces) if counts[i] > 0 and p not in SPECIALS]
    count = {p: counts[i] for i, p in enumerate(pieces)}
    ranked = sorted(used, key=lambda p: (-count[p], p))
    if complete:
        seen = set(ranked)
        ranked += [p for p in pieces if p not in seen and p not in SPECIALS]
    return Vocab(list(SPECIALS) + ranked)


# -- stage 5: encode (runs in worker processes) ---------------------------------------------------


def _encode_batch(batch, src_path: str, tgt_path: str, kind: str):
    import pyarrow as pa

    columns = {}
    for side, path in (("src", src_path), ("tgt", tgt_path)):
        key = (kind, path)
        if key not in _tokenizers:
            if kind == "bpe":
                _tokenizers[key] = Subword.from_file(Path(path)).encode_ids
            else:
                _tokenizers[key] = Vocab.from_file(Path(path)).encode_many
        ids = _tokenizers[key](batch.column(f"{side}_tokens").to_pylist())
        lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
        offsets = np.zeros(len(ids) + 1, dtype=np.int32)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.fromiter(chain.from_iterable(ids), dtype=np.int32, count=int(offsets[-1]))
        columns[f"{side}_ids"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(flat))
    return pa.table(columns)


# -- stage 6: filter by length -------------------------------------------------------------------


def _length_filter(encoded_train, keep, counts, max_len: int, max_ratio: float | None):
    src_len, tgt_len = _lengths(encoded_train, "src_ids"), _lengths(encoded_train, "tgt_ids")
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


def _write_split(ds, rows, folder, stem, learned, src_vocab, tgt_vocab) -> dict:
    stats = {"file": stem, "read": len(ds)}
    for side, vocab in (("src", src_vocab), ("tgt", tgt_vocab)):
        n, tokens, unk = _write_side(ds, f"{side}_ids", rows, learned.lookup(side), vocab.unk_id,
                                     folder / f"{stem}.{side}")  # fmt: skip
        stats.update({"pairs": n, f"{side}_tokens": tokens, f"{side}_oov": unk / max(tokens, 1)})
    return stats


def _write_side(ds, column, rows, lookup, unk_id, stem: Path) -> tuple[int, int, int]:
    """Write `stem`.ids.npy (flat int32) and `stem`.offsets.npy (int64, n + 1) for the kept rows;
    return pairs, tokens and <unk> tokens written."""
    lengths = _lengths(ds, column)
    if rows is not None:
        lengths = lengths[rows]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    np.save(f"{stem}.offsets.npy", offsets)
    total = int(offsets[-1])
    if total == 0:
        np.save(f"{stem}.ids.npy", np.zeros(0, dtype=np.int32))
        return len(lengths), 0, 0
    out = np.lib.format.open_memmap(f"{stem}.ids.npy", mode="w+", dtype=np.int32, shape=(total,))
    position = unk = 0
    for start, chunk_lengths, values in _chunks(ds, column):
        if rows is not None:
            values = values[np.repeat(rows[start : start + len(chunk_lengths)], chunk_lengths)]
        if lookup is not None:
            values = lookup[values]
        out[position : position + len(values)] = values
        position += len(values)
        unk += int(np.count_nonzero(values == unk_id))
    out.flush()
    del out
    return len(lengths), total, unk


def _fixes(tokens, rows) -> dict:
    flags = _column(tokens, "fixes")
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
    train_sources = _column(train, "src_hash")[keep]
    for name, ds in tokens.items():
        if name != train_name:
            splits[name]["overlap_pairs"] = int(np.isin(_pair_hashes(ds), train_pairs).sum())
            splits[name]["overlap_sources"] = int(
                np.isin(_column(ds, "src_hash"), train_sources).sum()
            )


def _write_words(train, keep: np.ndarray, path: Path) -> None:
    """BPE-dropout resegments train's spaCy tokens every epoch (held in memory when training)."""
    src, tgt = [], []
    for batch in train.select(np.flatnonzero(keep)).iter(batch_size=10_000):
        src.extend(batch["src_tokens"])
        tgt.extend(batch["tgt_tokens"])
    atomic_write_text(path, json.dumps([src, tgt], ensure_ascii=False))


# -- Arrow columns as numpy, in bounded chunks ----------------------------------------------------


def _table_column(ds, column: str):
    if ds._indices is not None:  # a selection: materialize just this column's rows
        ds = ds.select_columns([column]).flatten_indices()
    return ds.data.table.column(column)


def _column(ds, column: str) -> np.ndarray:
    return _table_column(ds, column).to_numpy()


def _lengths(ds, column: str) -> np.ndarray:
    import pyarrow.compute as pc

    lengths = pc.list_value_length(_table_column(ds, column))
    return lengths.to_numpy().astype(np.int64)


def _chunks(ds, column: str):
    """(first row, lengths, flat values) for every CHUNK_ROWS rows of a list column."""
    import pyarrow.compute as pc

    data = _table_column(ds, column)
    for start in range(0, len(data), CHUNK_ROWS):
        chunk = data.slice(start, CHUNK_ROWS).combine_chunks()
        lengths = pc.list_value_length(chunk).to_numpy().astype(np.int64)
        yield start, lengths, chunk.flatten().to_numpy()


def _count_ids(ds, column: str, rows: np.ndarray, size: int) -> np.ndarray:
    counts = np.zeros(size, dtype=np.int64)
    for start, lengths, values in _chunks(ds, column):
        values = values[np.repeat(rows[start : start + len(lengths)], lengths)]
        counts += np.bincount(values, minlength=size)[:size]
    return counts
