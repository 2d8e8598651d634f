"""Build a prepared corpus folder: read, clean, tokenize, learn the vocabulary, write flat ids.

    stats = build(cfg, folder)   # called by corpus.prepare when the cache has no such folder

Each stage holds a bounded amount in memory, whatever the corpus size: text and tokens stay in the
Arrow files `datasets` writes, work is done in batches, and what is kept per pair in memory is a
few numbers (lengths, 64-bit hashes). Our own passes over those files read them batch by batch
instead of memory-mapping them, so the pages read do not pile up in the process's memory.

1. read      sources.load_split: the split as an Arrow table of src and tgt text
2. tokenize  Dataset.map, batched, over data.num_proc processes: Unicode NFC, BOMs and stray
             whitespace removed, lowercased if asked, spaCy tokens with joiner marks, and a hash
             of each cleaned side (for duplicates and overlap)
3. filter    train only, from those numbers: empty sides, exact duplicates (data.dedup)
4. learn     the BPE and the vocabulary from at most vocab.train_sentences sampled training pairs
5. encode    tokens -> ids, streamed to flat files (BPE piece ids, mapped to vocabulary ids on
             write; a word's pieces are looked up once, so one process keeps pace)
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
import sys
import time
from collections import Counter
from contextlib import contextmanager
from itertools import chain
from pathlib import Path

import numpy as np

from translator.config import Config, ConfigError
from translator.data import DataError
from translator.files import atomic_folder, atomic_write_text
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
            raw = {name: load_split(cfg, name, work) for name in stems}
        log(
            f"read {', '.join(f'{stems[n]} {len(ds):,}' for n, ds in raw.items())} pairs; "
            f"tokenizing with {_processes(len(raw[d.train_split]), num_proc)} processes"
        )
        with _timed(seconds, "tokenize"):
            tokens = {
                name: _map(ds, _tokenize_batch, work / f"{stems[name]}.tokens.arrow", num_proc,
                           src_lang=d.src_lang, tgt_lang=d.tgt_lang, lowercase=d.lowercase)
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
            learned = _Learned(cfg, train, sample, given)
        log("encoding the ids")
        with _timed(seconds, "encode"):
            encoded = {
                name: _encode(ds, learned, work / stems[name], count=name == d.train_split)
                for name, ds in tokens.items()
            }
        learned.finish(partial=len(sample) < keep.sum())
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
        meta = {
            "format": FORMAT_VERSION,
            "source": describe(cfg),
            "splits": splits,
            "train_dropped": counts,
            "vocab_pairs": int(len(sample)),
            **({"vocab_from": str(given.path), "unseen_chars": learned.unseen} if given else {}),
            "seconds": {k: round(s, 2) for k, s in seconds.items()},
            "created": time.time(),
        }
        shutil.rmtree(work, ignore_errors=True)
        atomic_write_text(tmp / "meta.json", json.dumps(meta, indent=1))


DROPPED = {"empty": "with an empty side", "duplicates": "duplicates",
           "too_long": "over data.max_len", "ratio": "over data.max_ratio"}  # fmt: skip


def _processes(rows: int, num_proc: int) -> int:
    """Worker processes for a split: one below SMALL_SPLIT rows, where starting workers costs
    more than they save."""
    return num_proc if rows >= SMALL_SPLIT else 1


def _require_pairs(keep: np.ndarray, counts: dict, name: str) -> None:
    if not keep.any():
        what = ", ".join(f"{n:,} {DROPPED[why]}" for why, n in counts.items() if n) or "none read"
        raise DataError(f"the training split {name} has no pairs left after cleaning ({what})")


@contextmanager
def _timed(seconds: dict, stage: str):
    started = time.perf_counter()
    yield
    seconds[stage] = seconds.get(stage, 0.0) + time.perf_counter() - started


def _map(ds, function, cache_file: Path, num_proc: int, **kwargs):
    """`ds.map(function)` over Arrow batches, writing its output to `cache_file` (not the
    source's cache: a Hub dataset's folder must not grow by our intermediate files). Batches go
    in and out as Arrow tables: no per-row conversion by `datasets`. A progress bar on a
    terminal; none in a log file."""
    import datasets

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    if sys.stderr.isatty():
        datasets.enable_progress_bars()
    try:
        return _map_arrow(ds, function, cache_file, num_proc, kwargs)
    finally:
        datasets.disable_progress_bars()


def _map_arrow(ds, function, cache_file: Path, num_proc: int, kwargs: dict):
    if len(ds) == 0:  # `map` would return no columns at all: keep the function's schema
        import datasets

        return datasets.Dataset(function(ds.data.table.slice(0, 0), **kwargs))
    processes = _processes(len(ds), num_proc)
    return (
        ds.with_format("arrow")
        .map(
            function,
            batched=True,
            batch_size=MAP_BATCH,
            fn_kwargs=kwargs,
            remove_columns=ds.column_names,
            num_proc=processes if processes > 1 else None,
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
            if v.joint:
                self.src_bpe = Subword.train(
                    chain(lists("src_tokens"), lists("tgt_tokens")), v.bpe_size
                )
                self.tgt_bpe = self.src_bpe
            else:
                self.src_bpe = Subword.train(lists("src_tokens"), v.bpe_size)
                self.tgt_bpe = Subword.train(lists("tgt_tokens"), v.bpe_size)
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
            self.src_bpe = self.tgt_bpe = run.subword
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

    def finish(self, partial: bool) -> tuple[Vocab, Vocab]:
        """The vocabularies; for BPE, every piece the sampled training pairs use, by frequency.
        When the BPE saw only part of train (or BPE-dropout samples new segmentations), every
        other piece follows, so that no piece of the rest becomes <unk>."""
        if self.kind == "bpe" and not self.given:
            complete = partial or self.sampled
            if self.joint:
                both = self.counts["src"] + self.counts["tgt"]
                self.src_vocab = self.tgt_vocab = _vocab_by_count(self.src_bpe, both, complete)
            else:
                self.src_vocab = _vocab_by_count(self.src_bpe, self.counts["src"], complete)
                self.tgt_vocab = _vocab_by_count(self.tgt_bpe, self.counts["tgt"], complete)
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
            if self.sampled:  # resegments train every epoch (the source side's is the run's)
                self.tgt_bpe.to_file(folder / TGT_SUBWORD_FILE)


def _token_lists(ds, column: str, rows: np.ndarray):
    for start, batch in _record_batches(ds, [column]):
        mask = rows[start : start + batch.num_rows]
        yield from batch.column(0).filter(mask).to_pylist()


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


# -- stage 5: encode -------------------------------------------------------------------------------


def _encode(ds, learned: _Learned, stem: Path, count: bool) -> dict:
    """Per side: ids appended to the flat file `stem`.<side>.raw, and every row's length.
    `count`: this is train, whose sampled rows' pieces rank the vocabulary."""
    lengths: dict = {"src": [], "tgt": []}
    files = {side: open(f"{stem}.{side}.raw", "wb") for side in lengths}
    try:
        for start, batch in _record_batches(ds, ["src_tokens", "tgt_tokens"]):
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


def _write_split(sides: dict, rows, stem: Path, learned: _Learned) -> dict:
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


# -- Arrow columns as numpy -------------------------------------------------------------------


def _record_batches(ds, columns: list[str]):
    """(first row, record batch of `columns`) over a map output's Arrow files, read with plain
    reads: a memory map would keep every page read resident in this process."""
    import pyarrow as pa

    assert ds._indices is None, "a selection of rows has no files of its own"
    row = 0
    for entry in ds.cache_files:
        with pa.OSFile(entry["filename"]) as source:
            for batch in pa.ipc.open_stream(source):
                yield row, batch.select(columns)
                row += batch.num_rows
    assert row == len(ds), f"read {row} rows of {len(ds)}"


def _table_column(ds, column: str):
    return ds.data.table.column(column)


def _column(ds, column: str) -> np.ndarray:
    return _table_column(ds, column).to_numpy()


def _lengths(ds, column: str) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(_table_column(ds, column)).to_numpy().astype(np.int64)
