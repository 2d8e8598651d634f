"""Where a parallel corpus comes from: Multi30k, files or the Hugging Face Hub, read by `datasets`.

    ds = load_split(cfg, cfg.data.train_split, workdir)   # a datasets.Dataset, columns src, tgt
    fingerprint(cfg, cfg.data.train_split)                 # cheap identity for the cache key
    src, tgt = read_texts(cfg, "test")                     # a small split as lists of str (BLEU)

`data.source` picks the reader; all three end in the same `datasets` call, so that everything
after this module sees one kind of table:
- multi30k: the official `{split}.{lang}.gz` files, found or downloaded and sha256-checked by
  `translator.data.multi30k`, then read as the two plain-text files below.
- files: a split is a table file (.tsv, .csv, .jsonl, .json, .parquet; .gz for text formats) with
  a column per language, a `translation` column of {lang: text} dicts, or the two columns named in
  `data.columns`; or a prefix P of two plain-text files P.<src_lang> and P.<tgt_lang> (or .gz).
- hub: `load_dataset(data.hub, data.hub_config, split=...)`, online or from the local datasets
  cache; `data.hub` may also be a folder written by `save_to_disk`.

A setting that points nowhere raises ConfigError (exit 2); data that cannot be used raises
DataError (exit 1), naming the file and, for bad text, the line.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import gzip
import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path

from translator.config import Config, ConfigError
from translator.data.multi30k import (
    SHA256,
    DataError,
    canonical_split,
    locate_split,
    locate_splits,
    sha256_of,
)
from translator.run_dir import read_config

TABLE_FORMATS = {  # extension -> datasets builder
    ".tsv": "csv",
    ".csv": "csv",
    ".jsonl": "json",
    ".json": "json",
    ".parquet": "parquet",
}
# Words that name the configured split in `evaluate --split`, for every source.
ROLES = {"train": "train_split", "valid": "valid_split", "val": "valid_split", "dev": "valid_split",
         "validation": "valid_split", "test": "test_split"}  # fmt: skip


def resolve_split(cfg: Config, name: str) -> str:
    """'test' -> the configured test split (likewise train, valid); other names pass through."""
    return getattr(cfg.data, ROLES[name]) if name in ROLES else name


def describe(cfg: Config) -> str:
    d = cfg.data
    if d.source == "hub":
        return f"{d.hub}" + (f" ({d.hub_config})" if d.hub_config else "")
    return "Multi30k" if d.source == "multi30k" else "files"


def _quiet_datasets():
    import datasets

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    return datasets


# -- the files a split is made of -------------------------------------------------------------


def _split_files(cfg: Config, split: str) -> tuple[str, list[Path]]:
    """('text', [src file, tgt file]) or (builder, [table file]) for a multi30k or files split."""
    d = cfg.data
    if d.source == "multi30k":
        _check_multi30k_split(split)
        return "text", locate_split(split, [d.src_lang, d.tgt_lang], d.dir, d.verify_checksums)
    path = Path(split).expanduser()
    if path.is_file():
        return _table_format(path), [path]
    pair = [_text_file(path, lang) for lang in (d.src_lang, d.tgt_lang)]
    if all(pair):
        return "text", pair
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; name a table file or a prefix P of P.<lang> files")
    missing = " and ".join(
        f"{path}.{lang}" for lang, p in zip((d.src_lang, d.tgt_lang), pair) if not p
    )
    raise ConfigError(f"no such file: {path} (nor the text file {missing}, or .gz)")


def ensure_available(cfg: Config, splits: list[str]) -> None:
    """Multi30k: find or download every file of `splits` at once (an error lists all that are
    missing). Other sources are read where they are."""
    d = cfg.data
    if d.source == "multi30k":
        for split in splits:
            _check_multi30k_split(split)
        # Verified once, by the fingerprint's `locate_split`; downloads are checked as they land.
        locate_splits(splits, [d.src_lang, d.tgt_lang], d.dir, verify=False)


def _check_multi30k_split(split: str) -> None:
    try:
        canonical_split(split)
    except DataError as err:  # a name no Multi30k split has is a bad setting or argument
        raise ConfigError(str(err)) from None


def _text_file(prefix: Path, lang: str) -> Path | None:
    for candidate in (Path(f"{prefix}.{lang}"), Path(f"{prefix}.{lang}.gz")):
        if candidate.is_file():
            return candidate
    return None


def _table_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes[-2:]]
    if suffixes and suffixes[-1] == ".gz" and len(suffixes) == 2:
        suffixes = suffixes[:1]
        if suffixes[0] == ".parquet":
            raise ConfigError(f"{path}: parquet files are compressed already; drop the .gz")
    ext = suffixes[-1] if suffixes else ""
    if ext not in TABLE_FORMATS:
        known = ", ".join(TABLE_FORMATS)
        raise ConfigError(
            f"{path}: unknown file type {ext or '(none)'!r} (tables: {known}, text formats may "
            "end in .gz; or give a prefix P of the plain-text files P.<lang>)"
        )
    return ext


def fingerprint(cfg: Config, split: str) -> str:
    """What identifies the input of `split`, cheaply: file checksums (multi30k), size and mtime
    (files, as `datasets` does for local files), or the loaded dataset's fingerprint (hub)."""
    d = cfg.data
    if d.source == "hub":
        return _hub_split(d.hub, d.hub_config, split)._fingerprint
    kind, paths = _split_files(cfg, split)
    if d.source == "multi30k":  # a verified official file's checksum is its pinned one
        pinned = SHA256 if d.verify_checksums else {}
        parts = [pinned.get(p.name) or sha256_of(p) for p in paths]
    else:
        parts = [f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in paths]
    return hashlib.sha256(json.dumps([kind, parts]).encode()).hexdigest()


# -- reading --------------------------------------------------------------------------------


def load_split(cfg: Config, split: str, workdir: Path):
    """The split as a memory-mapped `datasets.Dataset` with string columns src and tgt (None for a
    missing value); `datasets` writes its Arrow files under `workdir`."""
    d = cfg.data
    if d.source == "hub":
        return _select_columns(_hub_split(d.hub, d.hub_config, split), cfg, f"{d.hub} {split}")
    kind, paths = _split_files(cfg, split)
    if kind == "text":
        src, tgt = (_read(p, "text", workdir) for p in paths)
        if len(src) != len(tgt):
            raise DataError(
                f"{paths[0]} has {len(src):,} lines but {paths[1]} has {len(tgt):,}; "
                "they must be aligned line by line"
            )
        datasets = _quiet_datasets()
        if len(src) == 0:  # concatenating empty in-memory tables loses a column
            text = datasets.Value("string")
            return datasets.Dataset.from_dict(
                {"src": [], "tgt": []}, datasets.Features(src=text, tgt=text)
            )
        return datasets.concatenate_datasets(
            [src.rename_column("text", "src"), tgt.rename_column("text", "tgt")], axis=1
        )
    return _select_columns(_read(paths[0], kind, workdir), cfg, str(paths[0]))


def as_files(cfg: Config) -> Config:
    """`cfg` reading its splits as files: data.extra_train is read so whatever data.source is."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source="files"))


def load_train_split(cfg: Config, workdir: Path):
    """The training split with data.extra_train's pairs after it, and how many pairs each
    extra file gave ({path: count})."""
    train = load_split(cfg, cfg.data.train_split, workdir)
    extras = {path: load_split(as_files(cfg), path, workdir) for path in cfg.data.extra_train}
    if not extras:
        return train, {}
    tables = [train, *(ds.cast(train.features) for ds in extras.values())]
    joined = _quiet_datasets().concatenate_datasets(tables)
    return joined, {path: len(ds) for path, ds in extras.items()}


def _read(path: Path, kind: str, workdir: Path):
    datasets = _quiet_datasets()
    options: dict = {}
    builder = TABLE_FORMATS.get(kind, kind)
    if builder == "text" and path.stat().st_size == 0:  # an empty split, not a builder error
        return datasets.Dataset.from_dict(
            {"text": []}, datasets.Features(text=datasets.Value("string"))
        )
    if builder == "csv":
        columns = _csv_header(path, "\t" if kind == ".tsv" else ",")
        options = dict(
            sep="\t" if kind == ".tsv" else ",",
            quoting=csv.QUOTE_NONE if kind == ".tsv" else csv.QUOTE_MINIMAL,
            keep_default_na=False,  # a sentence "NA" or "null" is text, not a missing value
            index_col=False,  # a trailing separator must not shift every column (pandas' index)
            na_filter=False,
            features=datasets.Features({c: datasets.Value("string") for c in columns}),
        )
    try:
        return datasets.load_dataset(
            builder, data_files=str(path), split="train", cache_dir=str(workdir), **options
        )
    except Exception as err:  # datasets wraps the reader's error; find the cause a user can fix
        raise _read_error(path, err) from None


def _csv_header(path: Path, sep: str) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8-sig", newline="") as f:
            return next(csv.reader(f, delimiter=sep), [])
    except (UnicodeDecodeError, OSError, EOFError, zlib.error) as err:
        raise _read_error(path, err) from None


def _read_error(path: Path, err: BaseException) -> Exception:
    cause = err
    while cause.__cause__ is not None or cause.__context__ is not None:
        if isinstance(cause, (UnicodeDecodeError, EOFError, zlib.error, gzip.BadGzipFile)):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, UnicodeDecodeError):
        line = _first_bad_line(path)
        return DataError(f"{path}: line {line:,} is not valid UTF-8 ({cause.reason})")
    if isinstance(cause, (EOFError, zlib.error, gzip.BadGzipFile)):
        return DataError(f"{path} is not a complete gzip file ({cause}); fetch it again")
    if isinstance(cause, PermissionError):
        return DataError(f"cannot read {path}: permission denied")
    return DataError(f"cannot read {path}: {_first_line(cause)}")


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err).strip() else type(err).__name__


def _first_bad_line(path: Path) -> int:
    """1-based number of the first line that is not UTF-8 (only called once reading failed)."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        for number, line in enumerate(f, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 0


@functools.lru_cache(maxsize=8)
def _hub_split(hub: str, hub_config: str | None, split: str):
    datasets = _quiet_datasets()
    where = f"data.hub {hub}" + (f" ({hub_config})" if hub_config else "")
    folder = Path(hub).expanduser()
    try:
        if folder.is_dir():  # written by Dataset(Dict).save_to_disk: no network, no cache
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise ConfigError(
                        f"{where} has no split {split!r} (it has: {', '.join(loaded)})"
                    )
                return loaded[split]
            raise ConfigError(
                f"{where} holds one dataset, not splits: save a DatasetDict (train, validation, "
                "test) with save_to_disk"
            )
        _check_hub_name(hub, where)
        return datasets.load_dataset(hub, hub_config, split=split)
    except ConfigError:
        raise
    except ConnectionError as err:
        cache = os.environ.get("HF_DATASETS_CACHE") or datasets.config.HF_DATASETS_CACHE
        raise DataError(
            f"{where}: the Hub cannot be reached and the dataset is not in the local datasets "
            f"cache ({cache}): run `translator prepare` once online, set HF_DATASETS_CACHE to a "
            f"cache that has it, or set data.hub to a folder saved with save_to_disk ({err})"
        ) from None
    except (datasets.exceptions.DatasetNotFoundError, FileNotFoundError) as err:
        raise ConfigError(f"{where}: no such dataset ({str(err).splitlines()[0]})") from None
    except ValueError as err:  # bad names, unknown configs or splits
        raise ConfigError(f"{where}: {str(err).splitlines()[0]}") from None
    except Exception as err:  # anything else `datasets` raises: one line, not a traceback
        raise DataError(f"{where}: cannot load split {split!r}: {_first_line(err)}") from None


def _check_hub_name(hub: str, where: str) -> None:
    """A name the Hub cannot hold is a bad setting, said before any network round trip."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(hub)
    except HFValidationError:
        raise ConfigError(
            f"{where}: not a Hub dataset name (NAME or OWNER/NAME of letters, digits, '-', '_' "
            "and '.') nor an existing folder"
        ) from None


def _select_columns(ds, cfg: Config, where: str):
    """Keep the source and target text as columns src and tgt."""
    d = cfg.data
    names = ds.column_names
    if d.columns is not None:
        wanted = list(d.columns)
    elif d.src_lang in names and d.tgt_lang in names:
        wanted = [d.src_lang, d.tgt_lang]
    elif "translation" in names:
        ds = ds.select_columns(["translation"]).flatten()
        wanted = [f"translation.{d.src_lang}", f"translation.{d.tgt_lang}"]
        names = ds.column_names
    else:
        wanted = [d.src_lang, d.tgt_lang]
    missing = [c for c in wanted if c not in names]
    if missing:
        raise ConfigError(
            f"{where} has no column {missing[0]!r} (it has: {', '.join(names)}); name the source "
            f"and target columns with data.columns=[SRC,TGT]"
        )
    ds = ds.select_columns(wanted).rename_columns(dict(zip(wanted, ["src", "tgt"])))
    import datasets

    for column in ("src", "tgt"):
        feature = ds.features[column]
        if not (
            isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")
        ):
            raise ConfigError(
                f"{where}: column {wanted[0 if column == 'src' else 1]!r} is not text"
            )
    return ds


def read_texts(cfg: Config, split: str) -> tuple[list[str], list[str]]:
    """A split's source and target sentences as lists, for scoring (val and test are small):
    Unicode NFC, without BOMs or line-end characters, otherwise as written."""
    from translator.data.tokenization import clean

    split = resolve_split(cfg, split)
    with tempfile.TemporaryDirectory(prefix="translator-read-") as workdir:
        ds = load_split(cfg, split, Path(workdir))
        src, tgt = ds["src"], ds["tgt"]
    return [clean(s or "") for s in src], [clean(t or "") for t in tgt]


def read_split_texts(cfg: Config, name: str) -> tuple[list[str], list[str]]:
    """Sources and references of a split of `cfg`'s data (`test`, a name, a file), or with
    `parent:NAME`, of a split of the data of the run `cfg` was initialised from."""
    if name.startswith("parent:"):
        if not cfg.train.init_from:
            raise ConfigError(f"{name}: this run was not initialised from another (no init_from)")
        cfg, name = read_config(Path(cfg.train.init_from)), name.removeprefix("parent:")
    return read_texts(cfg, name)
