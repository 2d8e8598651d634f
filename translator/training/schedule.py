"""Learning rates, budgets and patience: arithmetic over steps, epochs, minutes and validation
scores, with no model.

    learning_rate(step, cfg.train, planned_steps)       # warmup, then the schedule
    planned_steps(cfg.train, position, epoch_batches)   # where the nearest budget ends
    limit_met(cfg.train, position)                      # ("train.max_steps", 1000) or None
    finished(cfg.train, state)                          # a budget or the patience used up
    state.validated(bleu)                               # True: the best so far (patience)

A `TrainingState` is where a run stands: steps, epochs and the batch inside the epoch done, the
training seconds spent, the best validation BLEU and how many validations since it; state.pt
saves it whole. Time budgets are extrapolated from the pace so far, so a linear schedule
on a time budget depends on the machine's speed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from translator.config import TrainConfig


@dataclass
class TrainingState:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0
    elapsed_s: float = 0.0
    best_bleu: float = -1.0
    bad_validations: int = 0  # validations in a row without a better BLEU (train.patience)
    skipped_steps: int = 0  # NaN/inf (or fp16 overflow) steps
    forward_only: bool = False  # data.bidirectional: the reversed pairs are done with
    rdrop_on: bool = False  # train.rdrop_from: R-Drop has started

    def validated(self, bleu: float) -> bool:
        """Note a validation's BLEU; True when it is the best so far. The others count towards
        train.patience."""
        improved = bleu > self.best_bleu
        if improved:
            self.best_bleu, self.bad_validations = bleu, 0
        else:
            self.bad_validations += 1
        return improved


def learning_rate(step: int, cfg: TrainConfig, planned_steps: float | None = None) -> float:
    """Linear warmup to cfg.lr over warmup_steps, then one of three schedules:

    inverse_sqrt: lr * sqrt(warmup / step); constant: lr; linear: down to zero at
    `planned_steps`, the end of the budget (annealing to zero within a fixed budget beats
    inverse_sqrt's long tail of high rates; Li et al. 2020, "Budgeted training"). A linear
    budget shorter than two warmups warms up over its first half only, so that it still ends
    at zero.
    """
    step = max(step, 1)
    warmup = cfg.warmup_steps
    end = planned_steps if cfg.schedule == "linear" else None
    if end is not None:  # a budget shorter than two warmups: up for half of it, down for half
        warmup = min(warmup, end / 2)
    if warmup and step < warmup:
        return cfg.lr * step / warmup
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "linear":
        if end is None:
            return cfg.lr  # the budget's end is not known yet
        return cfg.lr * max(end - step, 0) / (end - warmup) if end > warmup else 0.0
    return cfg.lr * math.sqrt(max(warmup, 1) / step)


def planned_steps(
    cfg: TrainConfig, at: TrainingState, epoch_batches: int, elapsed_s: float | None = None
) -> float | None:
    """The step where the budget ends: the nearest of max_steps, max_epochs and (given the
    time spent) max_minutes, the last two extrapolated from the pace so far."""
    ends = [cfg.max_steps] if cfg.max_steps else []
    if cfg.max_epochs:  # steps so far + the rest at this epoch's pace (BPE-dropout varies it)
        per_epoch = math.ceil(epoch_batches / cfg.accumulate)
        done_this_epoch = math.ceil(at.batch_in_epoch / cfg.accumulate)
        ends.append(at.step - done_this_epoch + (cfg.max_epochs - at.epoch) * per_epoch)
    if cfg.max_minutes and elapsed_s and at.step:
        ends.append(at.step * cfg.max_minutes * 60 / elapsed_s)
    return min(ends) if ends else None


def budget_used(cfg: TrainConfig, at: TrainingState) -> float:
    """The share of the budget used: of max_steps, max_epochs or max_minutes, the most."""
    shares = [
        used / limit
        for limit, used in (
            (cfg.max_steps, at.step),
            (cfg.max_epochs, at.epoch),
            (cfg.max_minutes and cfg.max_minutes * 60, at.elapsed_s),
        )
        if limit
    ]
    return max(shares, default=0.0)


def limit_met(cfg: TrainConfig, at: TrainingState) -> tuple[str, float] | None:
    """The first of train.max_steps, max_epochs, max_minutes used up: (key, its value)."""
    for key, limit, used, unit in (
        ("train.max_steps", cfg.max_steps, at.step, 1),
        ("train.max_epochs", cfg.max_epochs, at.epoch, 1),
        ("train.max_minutes", cfg.max_minutes, at.elapsed_s, 60),
    ):
        if limit and used >= limit * unit:
            return key, limit
    return None


def extended(key: str, limit: float) -> str:
    """A larger budget to suggest when a run that met `key`=`limit` should go on."""
    return f"{1.5 * limit:g}" if key == "train.max_minutes" else str(int(2 * limit))


def finished(cfg: TrainConfig, state: TrainingState) -> tuple[str, str, str] | None:
    """Why training is over (a budget used up, or no better BLEU in train.patience
    validations), the key to raise to go on, and a larger value for it; None if not over."""
    met = limit_met(cfg, state)
    if met:
        return f"reached {met[0]}={met[1]}", met[0], extended(*met)
    if cfg.patience and state.bad_validations >= cfg.patience:
        reason = f"no better validation BLEU in {cfg.patience} validations"
        return reason, "train.patience", extended("train.patience", cfg.patience)
    return None
