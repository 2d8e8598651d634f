"""What a run shows while it trains: a progress bar on a terminal, else one plain log line per
metrics record; and the window of steps that each metrics record sums up.

    window = StepWindow(device); window.add(loss, n_tgt, n_src, grad_norm)
    with Progress(enabled=True, step=0) as bar: bar.plan(planned_steps, step); bar.advance()
    log_start(cfg, n_params, device, amp_dtype, dist, run_dir)   # "training NAME: ..." line
    log_validation(record, improved)     # the validation's log line
"""

from __future__ import annotations

import logging
import math
import sys
import time

import torch

from translator.device import dtype_name

log = logging.getLogger("translator")


class StepWindow:
    """The loop's sums between two metrics.jsonl lines."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.reset()

    def reset(self) -> None:
        self.loss = torch.zeros((), device=self.device)  # summed on the device: no sync a step
        self.tokens = self.src_tokens = 0
        self.grad_norms: list[float] = []  # finite ones only: an fp16 overflow step's is inf
        self.since = time.perf_counter()

    def add(self, loss: torch.Tensor, n_tgt: int, n_src: int, grad_norm: float) -> None:
        self.loss += loss
        self.tokens += n_tgt
        self.src_tokens += n_src
        if n_tgt and math.isfinite(grad_norm):  # not a skipped step
            self.grad_norms.append(grad_norm)

    def record(self, state, lr: float, epoch_batches: int, totals, clip_norm) -> dict:
        """The metrics.jsonl line of the window that ends at `state` (a TrainingState), given
        the (all-rank) summed loss, target and source tokens."""
        loss, tgt, src = totals
        seconds = max(time.perf_counter() - self.since, 1e-9)
        record = {
            "step": state.step,
            "epoch": round(state.epoch + state.batch_in_epoch / epoch_batches, 3),
            "lr": lr,
            "elapsed_s": round(state.elapsed_s, 1),
            "skipped_steps": state.skipped_steps,
            "train_loss": round(loss / max(tgt, 1), 4),
            "tokens_per_s": round(tgt / seconds, 1),
            "src_tgt_tokens_per_s": round((tgt + src) / seconds, 1),
        }
        norms = self.grad_norms
        if norms:  # this rank's: DDP has made the gradients, and so their norms, equal
            record["grad_norm"] = round(sum(norms) / len(norms), 4)
            clipped = sum(n > clip_norm for n in norms) / len(norms) if clip_norm else 0.0
            record["clipped"] = round(clipped, 3)
        return record


def log_start(cfg, n_params: int, device, amp_dtype, dist, run_dir) -> None:
    log.info(
        "training %s: %.2fM parameters on %s (%s)%s, run dir %s%s",
        cfg.name, n_params / 1e6, device, dtype_name(amp_dtype),
        f" x {dist.world_size} processes" if dist.enabled else "", run_dir,
        f", starting from {cfg.train.init_from}" if cfg.train.init_from else "",
    )  # fmt: skip


def log_validation(record: dict, improved: bool) -> None:
    """One line per validation, and one for train.keep_eval's sets."""
    log.info(
        "step %6d  epoch %3d  val_loss %.3f  val_ppl %7.2f  val_bleu %5.2f%s",
        record["step"], record["epoch"], record["val_loss"], record["val_ppl"],
        record["val_bleu"], "  (best)" if improved else "",
    )  # fmt: skip
    kept = record.get("keep_bleu")
    if kept:
        log.info("        kept: %s", "  ".join(f"{k} {b:5.2f}" for k, b in kept.items()))


class Progress:
    """A tqdm bar when stderr is a terminal; otherwise (nohup, tee, CI) no carriage returns but
    one plain log line per metrics record, so that a log of a whole run can be grepped."""

    def __init__(self, enabled: bool, step: int) -> None:
        from tqdm import tqdm

        self.enabled = enabled
        self.bar = tqdm(
            initial=step,
            unit="step",
            desc="train",
            disable=not (enabled and sys.stderr.isatty()),
            dynamic_ncols=True,
        )

    def plan(self, planned_steps: float | None, step: int) -> None:
        """The bar measures whichever budget ends first (steps, epochs or minutes, the last two
        extrapolated from the pace so far)."""
        if planned_steps is not None:
            self.bar.total = max(step, round(planned_steps))
            self.bar.refresh()

    def advance(self) -> None:
        self.bar.update(1)

    def show(self, record: dict, elapsed_s: float) -> None:
        if self.bar.disable and self.enabled:
            log.info(
                "step %6d  epoch %6.2f  loss %.3f  lr %.1e  %6.0f tok/s  %s elapsed",
                record["step"], record["epoch"], record["train_loss"], record["lr"],
                record["tokens_per_s"], clock(elapsed_s),
            )  # fmt: skip
        self.bar.set_postfix(
            loss=f"{record['train_loss']:.3f}",
            lr=f"{record['lr']:.1e}",
            tok_s=f"{record['tokens_per_s']:.0f}",
            refresh=False,
        )

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()


def clock(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    if minutes >= 60:
        return f"{minutes // 60}h{minutes % 60:02d}m{seconds:02d}s"
    return f"{minutes}m{seconds:02d}s"
