"""What a run's evaluations produced, kept in its run dir so that nothing is decoded twice.

    key = output_key(translator, sources, opts)     # what determines the outputs
    run_dir.read_evaluation(path, key)              # (record, hypotheses) or None
    record(path, key, {**scores, **describe(translator, opts, ...)}, hypotheses)

The key covers everything that decides the outputs: the source sentences, the decoding options
(threads aside), the engine and its quantization, the sha256 of every model's weights (a
retrained or averaged model never reuses another's outputs) and the search's outputs version (a
changed search never reuses an older one's). `evaluate` and `compare` both read
and write here; `translator runs` shows the latest test score.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from translator.config import DecodeConfig
from translator.data.multi30k import sha256_of
from translator.decoding import search
from translator.decoding.rerank import searched_with
from translator.run_dir import write_evaluation

log = logging.getLogger("translator")

_DIGESTS: dict[tuple[str, int, int], str] = {}  # weights file (path, size, mtime) -> sha256


def weights_sha256(path: Path) -> str:
    """The sha256 of a weights file, hashed once per process (and again when the file changes)."""
    stat = Path(path).stat()
    id_ = (str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if id_ not in _DIGESTS:
        _DIGESTS[id_] = sha256_of(Path(path))
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
        "rerank": _rerank_identity(opts.rerank),
        "sources": text_sha256(sources),
        "decode": decode,
        "engine": engine,
        "models": models,
        "search": search.OUTPUTS_VERSION,
    }
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def _rerank_identity(path: str | None) -> list[str] | None:
    """decode.rerank's weights file (its content, not just its name) and its models' weights."""
    if path is None:
        return None
    from translator.decoding.rerank import RerankWeights
    from translator.run_dir import BEST

    try:
        runs = RerankWeights.load(Path(path)).setup.runs
        identity = [hashlib.sha256(Path(path).read_bytes()).hexdigest()]
        return identity + [weights_sha256(Path(run) / BEST) for run in runs]
    except (OSError, ValueError):
        return None  # decoding says what is wrong with them


def describe(translator, opts: DecodeConfig, split: str, requested: str, seconds: float) -> dict:
    """What a record says of a request besides its scores: the split, how and with what it was
    decoded, and how long that took."""
    beam, alpha, _ = searched_with(opts)  # with decode.rerank: its weights file's
    return {
        "seconds": round(seconds, 2),
        "split": split,
        "requested": requested,  # as asked: `test` is the run's own test split
        "beam": beam,
        "alpha": alpha,
        "decode": dataclasses.asdict(opts),
        "shortlist": opts.shortlist and translator.has_shortlist,  # whether it was used
        "engine": translator.engine,
        "run": str(translator.run_dir),
        "weights": translator.weights,
        "ensemble": [str(path) for path in translator.ensemble],
        "models": 1 + len(translator.ensemble),
    }


def record(run_dir: Path, key: str, result: dict, hypotheses: Sequence[str]) -> None:
    """Keep an evaluation in its run dir; a run dir we may not write to only loses the record."""
    try:
        write_evaluation(run_dir, key, result, hypotheses)
    except OSError as err:
        log.warning("the evaluation was not recorded in %s: %s", run_dir, err)
