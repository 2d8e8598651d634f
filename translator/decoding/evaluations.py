"""What a run's evaluations produced, kept in its run dir so that nothing is decoded twice.

    key = output_key(translator, sources, opts)     # what determines the outputs
    run_dir.read_evaluation(path, key)              # (record, hypotheses) or None
    run_dir.write_evaluation(path, key, record, hypotheses)   # evaluations/<key>.json, .txt

The key covers everything that decides the outputs: the source sentences, the decoding options
(threads aside), the engine and its quantization, and the sha256 of every model's weights, so a
retrained or averaged model never reuses another's outputs. `evaluate` and `compare` both read
and write here; `translator runs` shows the latest test score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from translator.config import DecodeConfig

_DIGESTS: dict[tuple[str, int, int], str] = {}  # weights file (path, size, mtime) -> sha256


def weights_sha256(path: Path) -> str:
    """The sha256 of a weights file, hashed once per process (and again when the file changes)."""
    stat = Path(path).stat()
    id_ = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if id_ not in _DIGESTS:
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        _DIGESTS[id_] = digest.hexdigest()
    return _DIGESTS[id_]


def models_of(translator) -> list[str]:
    """The sha256 of the weights of every model `translator` decodes with."""
    info = getattr(translator, "info", None)
    if info is not None:  # a CTranslate2 export knows what it was converted from
        return [f"{info['weights_sha256']}:{info['quantization']}"]
    runs = [translator.run_dir, *translator.ensemble]
    return [weights_sha256(Path(run) / translator.weights) for run in runs]


def text_sha256(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def output_key(translator, sources: Sequence[str], opts: DecodeConfig) -> str:
    """The key of what `translator` outputs for `sources` with `opts`."""
    return key_of(models_of(translator), translator.engine, sources, opts)


def key_of(models: list[str], engine: str, sources: Sequence[str], opts: DecodeConfig) -> str:
    """The key of the outputs of these models (weights sha256) on this engine."""
    decode = {k: v for k, v in dataclasses.asdict(opts).items() if k != "threads"}
    identity = {
        "sources": text_sha256(sources),
        "decode": decode,
        "engine": engine,
        "models": models,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
