"""Passes over `datasets` Arrow files that keep memory flat: a batched map that writes its
output to a file of ours, and columns read back batch by batch or as numpy.

    tokens = map_batches(ds, function, cache_file, num_proc, lang="en")   # Arrow in, Arrow out
    for first_row, batch in record_batches(tokens, ["src_tokens"]): ...
    list_lengths(tokens, "src_tokens")  # tokens per row, as int64
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

MAP_BATCH = 1000  # rows per Dataset.map call
SMALL_SPLIT = 50_000  # rows below which one process maps (starting workers costs more)


def worker_count(rows: int, num_proc: int) -> int:
    """Worker processes for a split: one below SMALL_SPLIT rows, where starting workers costs
    more than they save."""
    return num_proc if rows >= SMALL_SPLIT else 1


def map_batches(ds, function, cache_file: Path, num_proc: int, **kwargs):
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
    processes = worker_count(len(ds), num_proc)
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


def record_batches(ds, columns: list[str]):
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


def numpy_column(ds, column: str) -> np.ndarray:
    return _table_column(ds, column).to_numpy()


def list_lengths(ds, column: str) -> np.ndarray:
    import pyarrow.compute as pc

    return pc.list_value_length(_table_column(ds, column)).to_numpy().astype(np.int64)
