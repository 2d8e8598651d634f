"""The config of a resumed run: its own config.yaml, where only budgets, logging and hardware may
change (`translator train --resume --set train.max_steps=...`)."""

from __future__ import annotations

from pathlib import Path

from translator import run_dir as rd
from translator.config import (
    Config,
    ConfigError,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    override_key,
)

# Keys a resumed run may change: budgets, logging and hardware, never model, data or optimizer.
RESUMABLE_KEYS = (
    "max_steps",
    "max_epochs",
    "max_minutes",
    "log_every",
    "tensorboard",
    "valid_every",
    "valid_max_sentences",
    "patience",
    "average_checkpoints",
    "threads",
    "device",
)


def resume_config(path: Path, overrides: list[str]) -> Config:
    """The run's own config, with only `train.<budget/logging/hardware>` keys overridable."""
    raw = config_to_dict(rd.read_config(path))
    for item in overrides:
        key = override_key(item)
        section, _, name = key.partition(".")
        if section != "train" or name not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {key}: a resumed run keeps its model, data and optimizer; "
                f"only train.{{{','.join(RESUMABLE_KEYS)}}} may change"
            )
    apply_overrides(raw, overrides)
    return config_from_dict(raw, source=str(path / rd.CONFIG))
