"""The training loop: teacher forcing, label smoothing, warmup then the schedule, AMP, checkpoints.

    run_dir = Trainer(cfg).train()                          # a new run under runs/
    run_dir = Trainer(cfg, run_dir=path, resume=True).train()  # continue where it stopped

Reads top to bottom: set up, then for each epoch, for each step: forward, backward, clip, step
(step.py), log, validate, checkpoint, stop on the step, epoch or time budget (schedule.py).
Validation measures the loss and the BLEU of greedy translations of the validation split; the
best-BLEU weights are kept as model.safetensors. Every save is atomic (run_dir.py), and state.pt
holds all a resumed run needs to continue exactly (on CPU the continued run matches an
uninterrupted one bit for bit; not under vocab.bpe_dropout, whose sampled segmentations
`tokenizers` draws from its own unseeded generator).
"""

from __future__ import annotations

import logging
import math
import signal
import time
from pathlib import Path

import numpy as np
import torch

from translator import run_dir as rd
from translator.config import Config
from translator.data.bundle import write_bundle_files
from translator.decoding.translator import Translator
from translator.device import (
    cuda_training_math,
    grad_scaler,
    resolve_precision,
    training_device,
)
from translator.model.transformer import Transformer
from translator.model.weights import load_weights
from translator.plots import plot_curves
from translator.training import schedule
from translator.training.checkpoints import (
    average_if_better,
    load_checkpoint,
    save_best_bleu,
    save_checkpoint,
)
from translator.training.data_feed import TrainingData
from translator.training.distributed import Distributed
from translator.training.optimizer import build_optimizer
from translator.training.optimizer_step import NonfiniteSteps, OptimizerStep
from translator.training.progress import Progress, StepWindow, log_start, log_validation
from translator.training.schedule import TrainingState, finished, learning_rate
from translator.training.signals import StopOnSignal
from translator.training.tensorboard import TensorBoard
from translator.training.validation import Validator

log = logging.getLogger("translator")


class Trainer:
    def __init__(
        self, cfg: Config, run_dir: Path | None = None, resume: bool = False, progress: bool = True
    ):
        self.cfg, self.resume, self.progress = cfg, resume, progress
        self.run_dir = Path(run_dir) if run_dir else rd.new_run_dir(cfg)
        self.state = TrainingState()  # step, epoch, best BLEU...: what state.pt saves
        self.nonfinite = NonfiniteSteps()  # NaN/inf steps are skipped; 10 in a row stop
        self.grad_norm = math.nan  # of the last step, before clipping
        self.history: list[dict] = []  # metrics.jsonl's records
        self.board: TensorBoard | None = None  # metrics.jsonl's mirror for TensorBoard (rank 0)
        self.stopper = StopOnSignal()  # SIGINT or SIGTERM asks training to stop
        self.dist = Distributed()  # joined in setup()
        self._validated_step = -1
        self._epoch_batches = 1
        self.planned_steps: float | None = None  # where the budget ends (linear schedule)

    @property
    def stop_signal(self) -> signal.Signals | None:
        """The SIGINT or SIGTERM that stopped training (saved and resumable), if one did."""
        return self.stopper.received

    # -- setup -------------------------------------------------------------------------------

    def setup(self) -> None:
        t = self.cfg.train
        torch.manual_seed(t.seed)
        if t.threads:
            torch.set_num_threads(t.threads)
        device = training_device(t.device)
        self.dist = Distributed.from_environment(device.type)
        self.device = self.dist.local_device(device)
        if not self.dist.is_main:  # rank 0 speaks for all
            log.setLevel(logging.WARNING)
            self.progress = False
        self.run_dir = self.dist.broadcast(self.run_dir)  # rank 0's timestamp names the run
        self.amp_dtype = resolve_precision(t.precision, self.device)
        if self.dist.is_main:
            rd.check_writable(self.run_dir)
        self.data = TrainingData.on_every_rank(
            self.cfg, self.dist, self.run_dir if self.resume else None
        )
        if self.resume:
            self.data.check_same_vocabularies(self.run_dir)
        self._setup_model()
        if self.resume:
            self._load_checkpoint()
        elif self.dist.is_main:
            d = self.data
            write_bundle_files(
                self.run_dir,
                self.cfg,
                d.src_vocab,
                d.tgt_vocab,
                d.subword,
                d.tgt_subword,
                shortlist=d.corpus.shortlist,
            )
            if t.init_from:
                rd.write_init_from(self.run_dir, Path(t.init_from))

    def _setup_model(self) -> None:
        cfg, data = self.cfg, self.data
        self.model = Transformer(
            cfg.model, len(data.src_vocab), len(data.tgt_vocab), data.src_vocab.pad_id
        ).to(self.device)
        if cfg.train.init_from and not self.resume:  # fine-tuning starts from the parent's best
            load_weights(self.model, Path(cfg.train.init_from) / rd.BEST)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        translator = Translator(
            self.model, cfg, data.src_vocab, data.tgt_vocab, data.subword, data.corpus.shortlist
        )
        self.validator = Validator(cfg, data, translator, self.device, self.amp_dtype)
        self.optimizer = build_optimizer(self.model, cfg.train, self.device)
        self.scaler = grad_scaler(self.device, self.amp_dtype)
        # A layer LayerDrop skipped has no gradient in that step: DDP must not wait for it.
        self.ddp = self.dist.wrap(self.model, self.device, find_unused=bool(cfg.model.layerdrop))
        wrapped = self.ddp or self.model
        self.forward = torch.compile(wrapped) if cfg.train.compile else wrapped

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> Path:
        try:
            self.setup()
            with cuda_training_math(self.device):
                if self.resume and self._already_finished():
                    return self.run_dir
                return self._train()
        except Exception as err:
            if self.dist.is_main and (self.run_dir / rd.CONFIG).exists():
                rd.write_status(self.run_dir, "failed", reason=str(err).splitlines()[0][:300])
            raise
        finally:
            if self.board:
                self.board.close()
            self.dist.close()

    def _train(self) -> Path:
        log_start(self.cfg, self.n_params, self.device, self.amp_dtype, self.dist, self.run_dir)
        if self.dist.is_main:  # (a resumed run that had finished changes nothing: not here)
            rd.write_status(self.run_dir, "training")
            self.board = TensorBoard.open(self.run_dir, self.cfg, self.state.step)
        self.model.train()
        with self.stopper:
            with Progress(self.progress, self.state.step) as bar:
                stop_reason = self._epochs(bar)
            if self.stop_signal:
                if self.dist.is_main:
                    self._save_checkpoint(best=False)
                    rd.write_status(self.run_dir, "stopped", reason=stop_reason)
                log.warning(
                    "%s. Continue with: translator train --resume --run-dir %s",
                    stop_reason, self.run_dir,
                )  # fmt: skip
                return self.run_dir
            return self._end(stop_reason)  # inside the handlers: a Ctrl-C here stops cleanly too

    def _epochs(self, bar: Progress) -> str:
        """Epoch after epoch, step after step, until a budget, patience or a signal stops
        training: why it stopped."""
        t, state = self.cfg.train, self.state
        started = time.perf_counter() - state.elapsed_s
        window, stop_reason = StepWindow(self.device), None
        while stop_reason is None:
            if state.batch_in_epoch == 0 and self._bidirectional_done():
                self.data.forward_only()
                state.forward_only = True
                used = schedule.budget_used(self.cfg.train, state)
                log.info("data.bidirectional %g: %.0f%% of the budget used at this epoch's end; "
                         "from epoch %d on, the pairs in their own direction only",
                         self.cfg.data.bidirectional, 100 * used, state.epoch + 1)  # fmt: skip
            if self.cfg.vocab.bpe_dropout:
                self.data.resample_segmentation()
            batches = self.data.sampler.epoch(state.epoch)
            self._epoch_batches = len(batches)
            if self.planned_steps is None:  # first epoch since start or resume
                # elapsed_s is 0, or the saved one: the same on every rank
                self.planned_steps = schedule.planned_steps(t, state, len(batches), state.elapsed_s)
                bar.plan(self.planned_steps, state.step)
            while state.batch_in_epoch < len(batches) and stop_reason is None:
                if self._rdrop_starts():
                    state.rdrop_on = True
                    used = schedule.budget_used(t, state)
                    log.info("train.rdrop_from %g: %.0f%% of the budget used; R-Drop (train.rdrop "
                             "%g) from step %d on", t.rdrop_from, 100 * used, t.rdrop,
                             state.step + 1)  # fmt: skip
                group = batches[state.batch_in_epoch : state.batch_in_epoch + t.accumulate]
                state.batch_in_epoch += len(group)
                window.add(*self.train_step(group), self.grad_norm)
                state.elapsed_s = time.perf_counter() - started
                bar.advance()
                if state.step % t.log_every == 0:
                    self._log_train(window, bar)
                if t.valid_every and state.step % t.valid_every == 0:
                    self._validate_and_save()
                stop_reason = self._agreed_stop()
            if state.batch_in_epoch >= len(batches):
                state.epoch, state.batch_in_epoch = state.epoch + 1, 0
                if not t.valid_every:
                    self._validate_and_save()
                stop_reason = stop_reason or self._agreed_stop()
        if not self.stop_signal:  # a budget was met: the bar ends full, at the real end
            bar.plan(state.step, state.step)
        return stop_reason

    def _end(self, stop_reason: str) -> Path:
        """The end of training: a last validation unless this step had one, checkpoint
        averaging."""
        if self._validated_step != self.state.step:
            self._validate_and_save()
        if self.cfg.train.average_checkpoints and self.dist.is_main:
            self.average_checkpoints()
        if self.dist.is_main:
            rd.write_status(self.run_dir, "complete", reason=stop_reason)
            if self.board:
                self.board.close(self.cfg, {"best_val_bleu": self.state.best_bleu})
                self.board = None
        log.info(
            "stopped: %s. Best validation BLEU %.2f. Run dir: %s",
            stop_reason, self.state.best_bleu, self.run_dir,
        )  # fmt: skip
        return self.run_dir

    def _already_finished(self) -> bool:
        """For a resumed run that met its budget: finish what its end of training left undone,
        or say how to train on. True when there is nothing more to do."""
        over = finished(self.cfg.train, self.state)
        if over is None:
            return False
        reason, key, value = over
        validated, ended = rd.ended_at(
            self.run_dir, self.history, self.state.step, self.cfg.train.average_checkpoints
        )
        if validated:
            self._validated_step = self.state.step
        if ended:  # another step would push out a kept checkpoint: no
            log.info(
                "%s is complete (%s); nothing was changed. To train on, raise the budget, e.g. "
                "translator train --resume --run-dir %s --set %s=%s",
                self.run_dir, reason, self.run_dir, key, value,
            )  # fmt: skip
        else:  # stopped after its last step, before the end of training: only finish it
            self._end(reason)
        return True

    def train_step(self, group: list[np.ndarray]) -> tuple[torch.Tensor, int, int]:
        """One optimizer step over `group` (accumulated batches): the summed loss and the target
        and source tokens it covered. A step whose loss or gradient is not finite changes
        nothing and returns (0, 0, 0); ten of those in a row stop training."""
        state = self.state
        state.step += 1
        lr = learning_rate(state.step, self.cfg.train, self.planned_steps)
        # Built from the trainer's current parts each step: wrappers (and tests) may swap them.
        stepper = OptimizerStep(
            self.cfg, self.model, self.forward, self.optimizer, self.scaler, self.ddp, self.dist,
            self.device, self.amp_dtype, self.data.tgt_vocab,
            rdrop=self.cfg.train.rdrop if state.rdrop_on or not self.cfg.train.rdrop_from else 0,
        )  # fmt: skip
        result = stepper(self.data.train_pairs, group, lr)
        self.grad_norm = result.grad_norm  # before clipping; logged as grad_norm and clipped
        self.nonfinite.skipped(result, state, self.run_dir)
        return result.loss, result.n_tgt, result.n_src

    # -- budgets -----------------------------------------------------------------------------

    def _bidirectional_done(self) -> bool:
        """Whether BiT's first phase (data.bidirectional's share of the budget) is over, on
        any rank: all switch at the same epoch."""
        if not self.data.both_directions:
            return False
        over = schedule.budget_used(self.cfg.train, self.state) >= self.cfg.data.bidirectional
        return self.dist.any(over, self.device)

    def _rdrop_starts(self) -> bool:
        """Whether R-Drop starts with the next step (train.rdrop_from's share of the budget is
        used), on any rank: all start at the same step."""
        t = self.cfg.train
        if not (t.rdrop and t.rdrop_from) or self.state.rdrop_on:
            return False
        return self.dist.any(schedule.budget_used(t, self.state) >= t.rdrop_from, self.device)

    def _agreed_stop(self) -> str | None:
        """Why to stop now (a signal, a budget, patience), on this rank or another: all ranks
        stop at the same step."""
        if self.stop_signal:
            reason = f"interrupted by {self.stop_signal.name}"
        else:
            over = finished(self.cfg.train, self.state)
            reason = over[0] if over else None
        if self.dist.any(reason is not None, self.device) and reason is None:
            reason = "another rank stopped"
        return reason

    # -- logging and validation --------------------------------------------------------------

    def _log_train(self, window: StepWindow, bar: Progress) -> None:
        t, state = self.cfg.train, self.state
        # All ranks' work (a collective in DDP).
        loss, tgt, src, elapsed = self.dist.sum(
            [window.loss.item(), window.tokens, window.src_tokens, state.elapsed_s], self.device
        )
        lr = learning_rate(state.step, t, self.planned_steps)
        record = window.record(state, lr, self._epoch_batches, (loss, tgt, src), t.clip_norm)
        # Re-plan after building the record, so the logged lr is the one this step used;
        # from the ranks' mean clock, so that every rank plans the same learning rates.
        mean_elapsed = elapsed / self.dist.world_size
        self.planned_steps = schedule.planned_steps(t, state, self._epoch_batches, mean_elapsed)
        bar.plan(self.planned_steps, state.step)  # a time budget: the pace measured so far
        if self.dist.is_main:
            self._record(record)
            bar.show(record, state.elapsed_s)
        window.reset()

    def _validate_and_save(self) -> None:
        state = self.state
        self._validated_step = state.step
        if not self.dist.is_main:
            return
        scores = self.validator.measure()
        improved = state.validated(scores["val_bleu"])
        record = {"step": state.step, "epoch": state.epoch, **scores,
                  "best_bleu": state.best_bleu, "elapsed_s": round(state.elapsed_s, 1)}  # fmt: skip
        self._record(record)
        if self.board:
            self.board.samples(state.step, self.validator.samples)
        log_validation(record, improved)
        self._save_checkpoint(best=improved, keep=self.cfg.train.average_checkpoints)
        plot_curves(self.history, self.run_dir / rd.CURVES)

    def _record(self, record: dict) -> None:
        self.history.append(record)
        rd.append_metrics(self.run_dir, record)
        if self.board:
            self.board.record(record)

    # -- checkpoints -------------------------------------------------------------------------

    def average_checkpoints(self) -> None:
        record = average_if_better(
            self.model, self.run_dir, self.validator.bleu, self.state.best_bleu
        )
        if record:
            if record["best_bleu"] > self.state.best_bleu:  # the average is now the best
                self.state.best_bleu = record["best_bleu"]
                save_best_bleu(self.run_dir, self.state.best_bleu)
            self._record({"step": self.state.step, **record})

    def _save_checkpoint(self, best: bool, keep: int = 0) -> None:
        save_checkpoint(
            self.run_dir, self.state, self.model, self.optimizer, self.scaler, best, keep
        )

    def _load_checkpoint(self) -> None:
        self.state = load_checkpoint(self.run_dir, self.model, self.optimizer, self.scaler)
        # Keep the history up to the saved step: later lines belong to work that was lost.
        self.history = rd.keep_metrics_until(self.run_dir, self.state.step)
        log.info(
            "resuming %s at step %d (epoch %d, batch %d)",
            self.run_dir, self.state.step, self.state.epoch, self.state.batch_in_epoch,
        )  # fmt: skip
        if self.state.forward_only and self.data.both_directions:  # BiT's second phase
            self.data.forward_only()
        if self.cfg.vocab.bpe_dropout:
            log.warning(
                "vocab.bpe_dropout: this run continues, but not bit for bit as if never stopped "
                "(the tokenizers library samples BPE-dropout's dropped merges from its own "
                "unseeded generator, so the resumed epoch is segmented anew)"
            )
