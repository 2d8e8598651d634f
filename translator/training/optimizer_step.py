"""One optimizer step over a group of batches, and what can go wrong in it.

    stepper = OptimizerStep(cfg, model, forward, optimizer, scaler, ddp, dist, device, amp_dtype,
                            vocab, rdrop)   # rdrop: this step's R-Drop weight (0: off)
    result = stepper(train_pairs, group, lr)     # result.applied: False when not finite
    nonfinite.skipped(result, state, run_dir)    # counts skipped steps; raises at 10 in a row

Forward (twice, as one doubled batch, with R-Drop), backward with the loss divided by the
update's target tokens (on all ranks: every token weighs the same, whatever its batch), gradient
clipping, then the update, which is skipped, changing nothing, when the loss or gradient is not
finite. An out-of-memory error names the batch and the settings to lower.
"""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from translator.config import Config
from translator.data.batching import make_batch
from translator.data.vocab import Vocab
from translator.errors import UserError
from translator.model.loss import dropout_consistency_loss, sequence_loss

log = logging.getLogger("translator")


class TrainingError(UserError, RuntimeError):
    """Training cannot go on (out of memory, losses that stay NaN); saved files stay intact."""


@dataclass
class StepResult:
    loss: torch.Tensor  # summed over the group's target tokens (on the device: no sync)
    n_tgt: int  # target tokens; 0 when the step was skipped
    n_src: int
    grad_norm: float  # before clipping
    applied: bool  # False: the loss or gradient was not finite, nothing changed
    overflowed: bool = False  # fp16: the grad scaler skipped the update, lowering its scale


class NonfiniteSteps:
    """Skipped steps in a row: a few NaN/inf steps are skipped, `limit` in a row stop training."""

    def __init__(self, limit: int = 10) -> None:
        self.limit, self.in_a_row = limit, 0

    def skipped(self, result: StepResult, state, run_dir: Path) -> None:
        """Count `result`'s skipped step (or fp16 overflow) in state.skipped_steps; warn about a
        NaN/inf step, and raise a TrainingError at the `limit`-th in a row."""
        if result.applied:
            self.in_a_row = 0
            state.skipped_steps += result.overflowed
            return
        state.skipped_steps += 1
        self.in_a_row += 1
        log.warning("step %d: loss or gradient is NaN/inf; step skipped", state.step)
        if self.in_a_row >= self.limit:
            raise TrainingError(
                f"{self.in_a_row} steps in a row had a NaN/inf loss or gradient (step "
                f"{state.step}); stopped. {run_dir} keeps the last good checkpoint; try a lower "
                "train.lr or train.precision=fp32"
            )


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Mixed precision in `dtype` on `device`, or nothing for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


class OptimizerStep:
    def __init__(
        self,
        cfg: Config,
        model: torch.nn.Module,
        forward,  # the model, or its DDP / torch.compile wrapper
        optimizer: torch.optim.Optimizer,
        scaler: torch.amp.GradScaler,
        ddp,
        dist,
        device: torch.device,
        amp_dtype: torch.dtype | None,
        tgt_vocab: Vocab,
        rdrop: float = 0.0,  # R-Drop's weight for this step (train.rdrop once it has started)
    ) -> None:
        self.cfg, self.model, self.forward = cfg, model, forward
        self.rdrop = rdrop
        self.optimizer, self.scaler, self.ddp, self.dist = optimizer, scaler, ddp, dist
        self.device, self.amp_dtype, self.vocab = device, amp_dtype, tgt_vocab

    def __call__(self, pairs, group: list[np.ndarray], lr: float) -> StepResult:
        t, v = self.cfg.train, self.vocab
        for param_group in self.optimizer.param_groups:
            param_group["lr"] = lr
        total, n_tgt, n_src = torch.zeros((), device=self.device), 0, 0
        r2l = self.cfg.model.right_to_left
        batches = [
            make_batch(pairs, indices, v.pad_id, v.sos_id, v.eos_id, r2l) for indices in group
        ]
        # Every target token of the update weighs the same (fairseq): the loss is divided by
        # the update's tokens on all ranks, times the ranks, as DDP averages their gradients.
        (tokens,) = self.dist.sum([sum(batch.n_tokens for batch in batches)], self.device)
        weight = self.dist.world_size / tokens
        for i, batch in enumerate(batches):
            if self.device.type == "cuda":
                batch = batch.pin_memory()  # lets the copy overlap with compute
            batch = batch.to(self.device, non_blocking=True)
            # DDP averages gradients once per step, after the group's last batch.
            accumulating = self.ddp is not None and i < len(group) - 1
            with (
                self._out_of_memory_hint(batch),
                self.ddp.no_sync() if accumulating else contextlib.nullcontext(),
            ):
                loss, objective = self._batch_loss(batch)
                self.scaler.scale(objective * weight).backward()
            total += loss.detach()
            n_tgt += batch.n_tokens
            n_src += batch.n_src_tokens
        self.scaler.unscale_(self.optimizer)
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.clip_norm or math.inf)
        grad_norm = norm.item()
        # With fp16 the grad scaler skips overflowing steps itself (and lowers its scale).
        finite = math.isfinite(total.item()) and (
            self.scaler.is_enabled() or math.isfinite(grad_norm)
        )
        if not finite:
            if self.scaler.is_enabled():
                # unscale_ ran: the scaler must close the step, or the next unscale_ raises.
                # Its update lowers the scale when the gradients overflowed too.
                self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            return StepResult(torch.zeros((), device=self.device), 0, 0, grad_norm, False)
        scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        overflowed = scale is not None and self.scaler.get_scale() < scale
        self.optimizer.zero_grad(set_to_none=True)
        return StepResult(total, n_tgt, n_src, grad_norm, True, overflowed)

    def _batch_loss(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's summed cross-entropy, and the objective to minimise (summed, per batch).

        With R-Drop the batch goes through the model twice, as one doubled batch so that the
        two passes draw different dropout masks; the objective is the mean of the two
        cross-entropies plus `rdrop` times the KL between the passes (R-Drop's weighting).
        """
        t, pad = self.cfg.train, self.vocab.pad_id
        if not self.rdrop:
            with autocast(self.device, self.amp_dtype):
                logits = self.forward(batch.src, batch.tgt_in)
            loss = sequence_loss(logits, batch.tgt_out, pad, t.label_smoothing)
            return loss, loss
        with autocast(self.device, self.amp_dtype):
            logits = self.forward(batch.src.repeat(2, 1), batch.tgt_in.repeat(2, 1))
        logits = logits.float()  # once, so that both losses read the same fp32 copy
        both = sequence_loss(logits, batch.tgt_out.repeat(2, 1), pad, t.label_smoothing)
        first, second = logits.chunk(2)
        consistency = dropout_consistency_loss(first, second, batch.tgt_out, pad)
        return both / 2, (both + self.rdrop * consistency) / 2  # R-Drop's loss, halved

    @contextlib.contextmanager
    def _out_of_memory_hint(self, batch):
        try:
            yield
        except RuntimeError as err:  # torch.OutOfMemoryError is a RuntimeError too
            if not _is_out_of_memory(err):
                raise
            rows, cols = batch.tgt_in.shape
            rdrop = " or turn train.rdrop off (it doubles the batch)" if self.rdrop else ""
            raise TrainingError(
                f"out of memory on a batch of {rows} sentences x {max(cols, batch.src.shape[1])} "
                f"tokens ({self.device}); lower data.max_tokens (now {self.cfg.data.max_tokens})"
                + (rdrop or "")
            ) from None


def _is_out_of_memory(err: RuntimeError) -> bool:
    text = str(err)
    return isinstance(err, torch.OutOfMemoryError) or any(
        marker in text for marker in ("out of memory", "can't allocate memory")
    )
