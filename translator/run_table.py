"""Every run under a folder, one row each, from its small files only: `translator runs`.

    rows = run_rows(Path("runs"))          # [{"name": ..., "status": "complete", ...}, ...]
    sort_rows(rows, "val_bleu")            # best first; a column missing from a row sorts last

A row reads status.json, config.yaml, metrics.jsonl, init_from.json, the evaluation records and
the header of the weights file: never the weights, the optimizer state or the corpus. Status:
`training` (its process is alive), `complete`, `stopped` (by a signal; resumable), `failed` (an
error; the reason is kept), `incomplete` (training with its process gone: killed, or the machine
stopped; resumable from its last checkpoint), `unrecorded` (made before status.json existed).
"""

from __future__ import annotations

import json
import os
import socket
import struct
from functools import cache
from pathlib import Path

from translator import run_dir as rd
from translator.config import Config, find_config, flat_config, load_config
from translator.errors import UserError

COLUMNS = (
    "name",
    "status",
    "config",
    "changes",
    "parent",
    "steps",
    "epochs",
    "minutes",
    "parameters",
    "val_bleu",
    "test_bleu",
    "size_mb",
    "started",
)


def find_runs(root: Path) -> list[Path]:
    """The run dirs directly under `root` (or `root` itself when it is one)."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder (train a run first, or pass the runs folder)")
    if (root / rd.CONFIG).exists():
        return [root]
    return sorted(p for p in root.iterdir() if (p / rd.CONFIG).exists())


def run_rows(root: Path) -> list[dict]:
    return [run_row(path) for path in find_runs(root)]


def run_row(path: Path) -> dict:
    row: dict = {"name": path.name, "path": str(path)}
    try:
        cfg = rd.read_config(path)
    except rd.RunError as err:
        return {**row, "status": "damaged", "error": str(err)}
    history = rd.read_metrics(path)

    def latest(key: str):  # the end of training's records (averaging) lack some keys
        return next((r[key] for r in reversed(history) if key in r), None)

    best = [r.get("best_bleu", r.get("val_bleu")) for r in history]
    best = [b for b in best if b is not None]
    parent = rd.read_init_from(path)
    status = rd.read_status(path)
    row.update(
        status=run_status(path, status),
        config=cfg.name,
        changes=config_changes(cfg),
        parent=Path(parent["run"]).name if parent else None,
        steps=latest("step"),
        epochs=latest("epoch"),
        minutes=round(latest("elapsed_s") / 60, 1) if latest("elapsed_s") is not None else None,
        parameters=parameters(path),
        val_bleu=max(best) if best else None,
        test_bleu=latest_test_bleu(path, cfg),
        size_mb=round(folder_bytes(path) / 1e6, 1),
        started=status.get("started") or _mtime(path / rd.CONFIG),
    )
    if status.get("reason"):
        row["reason"] = status["reason"]
    return row


def run_status(path: Path, status: dict) -> str:
    said = status.get("status")
    if said is None:
        return "unrecorded"
    if said != "training":
        return said
    if status.get("host") != socket.gethostname():
        return "training"  # another machine's process: it cannot be checked from here
    try:
        os.kill(int(status["pid"]), 0)
    except ProcessLookupError:
        return "incomplete"
    except (PermissionError, KeyError, ValueError, TypeError):
        pass  # alive under another user, or no pid to check
    return "training"


@cache
def _reference(name: str) -> dict:
    """The flattened config a run's keys are compared with: its shipped config of that name,
    else the built-in defaults."""
    try:
        base = load_config(find_config(name), [])
    except (UserError, OSError):
        base = Config()
    return flat_config(base)


def config_changes(cfg: Config) -> list[str]:
    """`key=value` for each key that differs from the shipped config the run is named after."""
    reference = _reference(cfg.name)
    skip = {"name"}
    return [
        f"{k}={v}" for k, v in flat_config(cfg).items() if k not in skip and reference.get(k) != v
    ]


def parameters(path: Path) -> int | None:
    """The model's parameter count from the safetensors header of its weights (tied tensors are
    stored once), without reading the weights."""
    for name in (rd.BEST, rd.LAST):
        try:
            with open(path / name, "rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
        except (OSError, struct.error, ValueError):
            continue
        total = 0
        for key, tensor in header.items():
            if key != "__metadata__":
                count = 1
                for dim in tensor["shape"]:
                    count *= dim
                total += count
        return total
    return None


def latest_test_bleu(path: Path, cfg: Config) -> float | None:
    """BLEU of the newest evaluation of the run's own test split (`evaluate`, `compare`)."""
    tests = [
        r
        for r in rd.evaluation_records(path)
        if "bleu" in r
        and (r.get("requested") == "test" or r.get("split") == cfg.data.test_split)
        and not r.get("ensemble")
    ]
    return tests[-1]["bleu"] if tests else None


def folder_bytes(path: Path) -> int:
    total = 0
    for entry in os.scandir(path):
        if entry.is_dir(follow_symlinks=False):
            total += folder_bytes(Path(entry.path))
        elif entry.is_file(follow_symlinks=False):
            total += entry.stat().st_size
    return total


def _mtime(path: Path) -> str | None:
    import time

    try:
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(path.stat().st_mtime))
    except OSError:
        return None


def sort_rows(rows: list[dict], key: str) -> list[dict]:
    """Numbers high to low (the best BLEU first), text A to Z; rows without the key last."""
    if key not in COLUMNS:
        raise UserError(f"--sort {key}: choose one of {', '.join(COLUMNS)}")
    present = [r for r in rows if r.get(key) is not None]
    missing = [r for r in rows if r.get(key) is None]
    numeric = all(isinstance(r[key], (int, float)) for r in present)
    present.sort(key=lambda r: r[key] if numeric else str(r[key]), reverse=numeric)
    return present + missing
