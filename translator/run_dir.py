"""Run directories: every file of a run is named, written and read here, and nowhere else.

    runs/<config-name>-<YYYYmmdd-HHMMSS>/
      config.yaml                      the resolved config, and the software versions that made it
      vocab.src.json  vocab.tgt.json   vocabularies
      subword.json                     the BPE (vocab.kind: bpe only)
      shortlist.safetensors            target tokens likely for each source token (decoding)
      model.safetensors                best weights (by validation BLEU)
      last.safetensors                 latest weights
      state.pt                         weights, optimizer, position, RNG: what --resume needs
      metrics.jsonl                    one JSON record per line: training, validation, averaging
      curves.png                       learning curves, redrawn at every validation
      tensorboard/                     the same curves, validation samples and hparams (TensorBoard)
      checkpoints/step-NNNNNNN.safetensors   weights of the last train.average_checkpoints
                                             validations
      averaged.safetensors             their average (the end of training, `translator average`)
      init_from.json                   fine-tuned runs: the parent run, its weights' sha256
      status.json                      training, complete, stopped (a signal) or failed; the pid
      evaluations/                     each `evaluate`/`compare`: its outputs and scores (JSON)
      ct2/                             a CTranslate2 export (`translator export`)

    run = load_run(latest_run())       # config, vocabularies and the best model, ready to decode

Nothing here unpickles arbitrary objects: weights are safetensors, metadata YAML/JSON, and the
trainer state is read with `torch.load(weights_only=True)`. Every write is atomic. "The latest
run" is found by scanning the runs folder for the newest complete bundle, so there is no pointer
that can go stale.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from translator.config import VERSIONS, Config, ConfigError, config_from_dict
from translator.errors import UserError
from translator.files import atomic_write_text

CONFIG, SRC_VOCAB, TGT_VOCAB = "config.yaml", "vocab.src.json", "vocab.tgt.json"
SUBWORD = "subword.json"
TGT_SUBWORD = "subword.tgt.json"  # separate BPEs (vocab.joint: false): the target side's
SHORTLIST = "shortlist.safetensors"  # the lexical shortlist (data/shortlist.py)
BEST, LAST, STATE, METRICS, CURVES = (
    "model.safetensors",
    "last.safetensors",
    "state.pt",
    "metrics.jsonl",
    "curves.png",
)
CHECKPOINTS, AVERAGED = "checkpoints", "averaged.safetensors"
TENSORBOARD = "tensorboard"  # TensorBoard event files (training/tensorboard.py)
INIT_FROM = "init_from.json"
STATUS = "status.json"  # training, complete, stopped or failed: what `translator runs` shows
EVALUATIONS = "evaluations"  # what `evaluate` and `compare` scored (decoding/evaluations.py)
_CHECKPOINT = re.compile(r"step-(\d+)\.safetensors")


class RunError(UserError, RuntimeError):
    """A run dir that is missing, incomplete or inconsistent."""


def runs_root() -> Path:
    return Path(os.environ.get("TRANSLATOR_RUNS_DIR", "runs"))


def new_run_dir(cfg: Config, root: Path | None = None) -> Path:
    root = root or runs_root()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = root / f"{cfg.name}-{stamp}"
    suffix = 1
    while path.exists():  # two runs started in the same second
        suffix += 1
        path = root / f"{cfg.name}-{stamp}-{suffix}"
    return path


def latest_run(root: Path | None = None, needs: str = BEST) -> Path:
    """The run whose `needs` file (best weights; state.pt to resume) was written last."""
    root = root or runs_root()
    candidates = [p.parent for p in root.glob(f"*/{needs}") if (p.parent / CONFIG).exists()]
    if not candidates:
        raise RunError(
            f"no {'resumable' if needs == STATE else 'trained'} run found in {root}/ "
            "(train one with `translator train`, or pass the run dir)"
        )
    return max(candidates, key=lambda p: (p / needs).stat().st_mtime)


def check_writable(path: Path) -> None:
    """Fail before minutes of training, not at the first save."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / ".write-test", "")
        (path / ".write-test").unlink()
    except OSError as err:
        raise RunError(f"cannot write to run dir {path}: {err.strerror or err}") from None


def software_versions() -> dict[str, str | None]:
    """The versions of what makes a run's numbers: Python, and the libraries that read the data,
    tokenize it, learn the BPE and train (config.yaml records them)."""
    import importlib.metadata
    import platform

    versions: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("translator", "torch", "tokenizers", "spacy", "datasets"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def read_versions(path: Path) -> dict | None:
    """What config.yaml says made the run (software_versions); None for runs made before it
    was recorded, or without a readable config.yaml."""
    try:
        raw = yaml.safe_load((Path(path) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None
    found = raw.get(VERSIONS) if isinstance(raw, dict) else None
    return found if isinstance(found, dict) else None


def read_config(path: Path) -> Config:
    try:
        raw = yaml.safe_load((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as err:
        raise RunError(f"{path} has no readable {CONFIG}: {err}") from None
    raw = raw or {}
    model = raw.get("model")
    if isinstance(model, dict):  # made before the key existed, when the default was "as dropout"
        model.setdefault("activation_dropout", None)
    try:
        return config_from_dict(raw, source=str(path / CONFIG))
    except ConfigError as err:
        raise RunError(f"{err} (was this run made by another version of translator?)") from None


def best_validation(path: Path) -> tuple[float, int] | None:
    """(best validation BLEU, the step it was reached at) from a run's metrics, or None."""
    valid = [r for r in read_metrics(path) if "val_bleu" in r]
    best = max(valid, key=lambda r: r["val_bleu"], default=None)  # the first of equals
    return (best["val_bleu"], best.get("step", 0)) if best else None


def write_init_from(run_dir: Path, parent: Path) -> None:
    """init_from.json: the parent's path, the file of its weights this run started from, their
    sha256, and the parent's best validation BLEU."""
    weights = Path(parent) / BEST
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    best = best_validation(parent)
    origin = {
        "run": str(Path(parent).resolve()),
        "weights": BEST,
        "sha256": digest,
        "val_bleu": best[0] if best else None,
    }
    atomic_write_text(Path(run_dir) / INIT_FROM, json.dumps(origin, indent=1) + "\n")


def write_status(run_dir: Path, status: str, reason: str | None = None) -> None:
    """status.json: where training stands (training, complete, stopped, failed), which process
    trains (a `training` run whose process is gone was killed), and when it started."""
    path = Path(run_dir) / STATUS
    started = read_status(run_dir).get("started") or time.strftime("%Y-%m-%dT%H:%M:%S")
    record = {"status": status, "reason": reason, "pid": os.getpid(), "host": socket.gethostname(),
              "started": started, "updated": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")


def read_status(run_dir: Path) -> dict:
    """What status.json says ({} for a run made before it existed, or a damaged file)."""
    try:
        return json.loads((Path(run_dir) / STATUS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def read_init_from(run_dir: Path | None) -> dict | None:
    """What init_from.json says, or None for a run trained from scratch (or an export)."""
    path = Path(run_dir) / INIT_FROM if run_dir else None
    if path is None or not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


# -- metrics.jsonl: one writer (training), one reader (training, plots, scripts, reports) -------


def read_metrics(path: Path) -> list[dict]:
    """The records of a run's metrics.jsonl, oldest first (a line cut by a crash is skipped)."""
    metrics = Path(path) / METRICS
    lines = metrics.read_text(encoding="utf-8").splitlines() if metrics.exists() else []
    records = []
    for line in lines:
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def append_metrics(path: Path, record: dict) -> None:
    with open(Path(path) / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def keep_metrics_until(path: Path, step: int) -> list[dict]:
    """Drop the records after `step` (work a resumed run lost) and return the rest."""
    kept = [r for r in read_metrics(path) if r.get("step", 0) <= step]
    atomic_write_text(Path(path) / METRICS, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def ended_at(path: Path, history: list[dict], step: int, averaging: int) -> tuple[bool, bool]:
    """What the metrics history says the end of training did at `step`: (validated there,
    ended there: validated and, when train.average_checkpoints had checkpoints to average,
    averaged)."""
    at_step = [r for r in history if r.get("step") == step]
    validated = any("val_loss" in r for r in at_step)
    owes_average = averaging and len(kept_checkpoints(path)) > 1
    return validated, validated and (not owes_average or any("averaged" in r for r in at_step))


# -- the kept checkpoints (state.pt is written by training/checkpoints.py) ----------------------


def read_state(path: Path) -> dict:
    """state.pt as saved: the numbers of TrainingState and the tensors."""
    import torch

    file = Path(path) / STATE
    if not file.exists():
        raise RunError(f"{path} has no {STATE} to resume from")
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # any unreadable state is one clear error
        raise RunError(f"cannot read {file}: {err}") from None


def checkpoint_path(path: Path, step: int) -> Path:
    """Where the weights of `step` are kept (the folder is created)."""
    (Path(path) / CHECKPOINTS).mkdir(exist_ok=True)
    return Path(path) / CHECKPOINTS / f"step-{step:07d}.safetensors"


def kept_checkpoints(path: Path) -> list[Path]:
    """The run's per-validation weights, oldest first."""
    folder = Path(path) / CHECKPOINTS
    found = [(int(m[1]), p) for p in folder.glob("*") if (m := _CHECKPOINT.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def prune_checkpoints(path: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints."""
    paths = kept_checkpoints(path)
    for old in paths[: max(len(paths) - keep, 0)]:
        old.unlink(missing_ok=True)


# -- evaluations/: what `evaluate` and `compare` decoded (keys: decoding/evaluations.py) ------


def read_evaluation(run_dir: Path, key: str) -> tuple[dict, list[str]] | None:
    """The record and hypotheses saved under `key`, or None (also for a damaged pair)."""
    folder = Path(run_dir) / EVALUATIONS
    try:
        record = json.loads((folder / f"{key}.json").read_text(encoding="utf-8"))
        hyps = (folder / f"{key}.txt").read_text(encoding="utf-8").split("\n")[:-1]
    except (OSError, json.JSONDecodeError):
        return None
    return (record, hyps) if len(hyps) == record.get("n") else None


def write_evaluation(run_dir: Path, key: str, record: dict, hypotheses: Sequence[str]) -> None:
    """Write the hypotheses, then the record that points at them (both atomically)."""
    folder = Path(run_dir) / EVALUATIONS
    folder.mkdir(exist_ok=True)
    atomic_write_text(
        folder / f"{key}.txt", "".join(h.replace("\n", " ") + "\n" for h in hypotheses)
    )
    record = {**record, "key": key, "n": len(hypotheses),
              "recorded": time.strftime("%Y-%m-%dT%H:%M:%S")}  # fmt: skip
    atomic_write_text(folder / f"{key}.json", json.dumps(record, indent=1) + "\n")


def evaluation_records(run_dir: Path) -> list[dict]:
    """Every evaluation record of a run, oldest first."""
    records = []
    for path in (Path(run_dir) / EVALUATIONS).glob("*.json"):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        records.append(record)
    return sorted(records, key=lambda r: r.get("recorded", ""))
