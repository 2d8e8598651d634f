"""Fine-tuning: a new run that starts from another run's best weights (`train --init-from RUN`).

    cfg = init_from_config("finetune", overrides, Path("runs/general"))
    trainer = Trainer(cfg)            # loads RUN's weights; fresh optimizer, schedule, best score

The new run keeps RUN's model shape and vocabulary: its corpus is segmented with RUN's BPE and
numbered with RUN's vocabularies (corpus.prepare reads them from `train.init_from`), so every id
means what it meant to RUN. Everything else (data, optimizer, learning rate, budgets, decoding)
comes from the new config; of the model section only the regularisers (dropout and the
training-time noise) may change (a config file's other model and vocab keys give way to RUN's;
the same keys set with --set are refused). `--resume` is different: it continues the very same run.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from translator.config import (
    Config,
    ConfigError,
    ModelConfig,
    VocabConfig,
    build_config,
    config_to_dict,
    load_config,
    override_key,
    read_raw_config,
)
from translator.data.bundle import check_parent

log = logging.getLogger("translator")

FINETUNE_CONFIG = "finetune"  # the shipped example: a small learning rate, a short warmup
REGULARISERS = {
    "dropout", "attention_dropout", "activation_dropout", "word_dropout", "word_dropout_tgt",
    "word_replace", "word_replace_tgt", "layerdrop",
}  # fmt: skip
KEPT = {
    "model": {f.name for f in dataclasses.fields(ModelConfig)} - REGULARISERS,
    "vocab": {f.name for f in dataclasses.fields(VocabConfig)} - {"bpe_dropout"},
}


def init_from_config(path: str | Path | None, overrides: list[str], parent: Path) -> Config:
    """The config of a run initialised from `parent`: `path` (default: the shipped finetune
    config) with `overrides`, RUN's model and vocabulary sections, and train.init_from set."""
    parent = Path(parent)
    run = check_parent(parent)
    raw, source = read_raw_config(path or FINETUNE_CONFIG, overrides)
    inherited = config_to_dict(run.cfg)
    set_here = {override_key(item) for item in overrides}
    replaced = []
    for section, kept in KEPT.items():
        given = raw.get(section) or {}
        for key in sorted(kept & given.keys()):
            if given[key] == inherited[section][key]:
                continue
            if f"{section}.{key}" in set_here:  # asked for on the command line: say no
                raise ConfigError(
                    f"{section}.{key}={given[key]}: a run initialised from {parent} keeps its "
                    f"{section} ({section}.{key}: {inherited[section][key]}); drop the setting"
                )
            replaced.append(f"{section}.{key}")  # the file's: the parent's value wins
        raw[section] = {**inherited[section], **{k: v for k, v in given.items() if k not in kept}}
    if replaced:
        log.info("from %s, as a fine-tune must: %s", parent, ", ".join(replaced))
    raw.setdefault("train", {})["init_from"] = str(parent.resolve())
    cfg = build_config(raw, source, overrides)
    pd, d = run.cfg.data, cfg.data
    if (d.src_lang, d.tgt_lang) != (pd.src_lang, pd.tgt_lang):
        raise ConfigError(
            f"{parent} translates {pd.src_lang}→{pd.tgt_lang}, but this config's data is "
            f"{d.src_lang}→{d.tgt_lang}: set data.src_lang and data.tgt_lang to match"
        )
    if d.lowercase != pd.lowercase:
        raise ConfigError(
            f"{parent} was trained with data.lowercase: {str(pd.lowercase).lower()}; "
            "a run initialised from it must use the same"
        )
    return cfg


def training_config(
    path: str | Path | None, overrides: list[str], init_from: Path | None
) -> Config:
    """The config `translator train` and `prepare` use: `path` with `overrides`, or, with
    `--init-from RUN` or train.init_from, the config of a run initialised from RUN."""
    if init_from is None:
        cfg = load_config(path, overrides)
        if not cfg.train.init_from:
            return cfg
        init_from = Path(cfg.train.init_from)
    return init_from_config(path, overrides, init_from)
