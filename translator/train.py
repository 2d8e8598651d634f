"""The training loop: teacher forcing, label smoothing, warmup + inverse-sqrt, AMP, checkpoints.

    run_dir = Trainer(cfg).train()                          # a new run under runs/
    run_dir = Trainer(cfg, run_dir=path, resume=True).train()  # continue where it stopped

Reads top to bottom: set the learning rate, forward, backward, clip, step, log, validate,
checkpoint, stop on the step, epoch or time budget. Validation measures the loss and the BLEU of
greedy translations of the validation split; the best-BLEU weights are kept as model.safetensors.
Every save is atomic, and state.pt holds all a resumed run needs to continue exactly (on CPU the
continued run matches an uninterrupted one bit for bit).
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
from translator.allocator import keep_freed_memory
from translator.average import average_into
from translator.config import Config, ConfigError
from translator.device import dtype_name, resolve_device, resolve_precision
from translator.distributed import Distributed
from translator.files import atomic_write_text
from translator.model import Transformer
from translator.optim import build_optimizer
from translator.plots import plot_curves
from translator.schedule import Position, extended, learning_rate, limit_met, planned_steps
from translator.signals import StopOnSignal
from translator.step import OptimizerStep, TrainingError
from translator.train_log import Progress, StepWindow
from translator.training_data import TrainingData
from translator.translate import Translator
from translator.validation import Validator

log = logging.getLogger("translator")

# Keys a resumed run may change: budgets, logging and hardware, never model, data or optimizer.
RESUMABLE_KEYS = (
    "max_steps",
    "max_epochs",
    "max_minutes",
    "log_every",
    "valid_every",
    "valid_max_sentences",
    "patience",
    "average_checkpoints",
    "threads",
    "device",
)


def resume_config(path: Path, overrides: list[str]) -> Config:
    """The run's own config, with only `train.<budget/logging/hardware>` keys overridable."""
    from translator.config import apply_overrides, config_from_dict, config_to_dict

    raw = config_to_dict(rd.read_config(path))
    for item in overrides:
        key = item.partition("=")[0].strip()
        section, _, name = key.partition(".")
        if section != "train" or name not in RESUMABLE_KEYS:
            raise ConfigError(
                f"--set {key}: a resumed run keeps its model, data and optimizer; "
                f"only train.{{{','.join(RESUMABLE_KEYS)}}} may change"
            )
    apply_overrides(raw, overrides)
    return config_from_dict(raw, source=str(path / rd.CONFIG))


MAX_NONFINITE_IN_A_ROW = 10


def _check_writable(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path / ".write-test", "")
        (path / ".write-test").unlink()
    except OSError as err:
        raise rd.RunError(f"cannot write to run dir {path}: {err.strerror or err}") from None


class Trainer:
    def __init__(
        self, cfg: Config, run_dir: Path | None = None, resume: bool = False, progress: bool = True
    ):
        self.cfg, self.resume, self.progress = cfg, resume, progress
        self.run_dir = Path(run_dir) if run_dir else rd.new_run_dir(cfg)
        self.step = self.epoch = self.batch_in_epoch = 0
        self.best_bleu, self.bad_validations, self.elapsed_s = -1.0, 0, 0.0
        self.skipped_steps = self.nonfinite_in_a_row = 0  # NaN/inf (or fp16 overflow) steps
        self.grad_norm = math.nan  # of the last step, before clipping
        self.history: list[dict] = []
        self.stopper = StopOnSignal()  # SIGINT or SIGTERM asks training to stop
        self._planned_stop: str | None = None  # patience ran out
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
        cfg, t = self.cfg, self.cfg.train
        torch.manual_seed(t.seed)
        if t.threads:
            torch.set_num_threads(t.threads)
        self.device = resolve_device(t.device)
        if self.device.type == "cpu":
            keep_freed_memory()  # big logits tensors otherwise page-fault in every step
        self.dist = Distributed.from_environment(self.device.type)
        if self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores
            torch.backends.cudnn.allow_tf32 = True
            # cuDNN attention (PyTorch's pick for bf16 on Hopper) plans anew for every batch
            # shape, and length-bucketed batches have hundreds: bf16 steps ran 7x slower on an
            # H100 with it (11.7k against 84k target tok/s, scripts/bench_train.py).
            torch.backends.cuda.enable_cudnn_sdp(False)
        if not self.dist.is_main:  # rank 0 speaks for all
            log.setLevel(logging.WARNING)
            self.progress = False
        self.run_dir = self.dist.broadcast(self.run_dir)  # rank 0's timestamp names the run
        self.amp_dtype = resolve_precision(t.precision, self.device)
        if self.dist.is_main:
            _check_writable(self.run_dir)  # before minutes of work, not at the first save
            self._setup_data()  # builds the cache once ...
        self.dist.barrier()
        if not self.dist.is_main:
            self._setup_data()  # ... which the other ranks then load
        self._setup_model()
        if self.resume:
            self._load_state()
        elif self.dist.is_main:
            data = self.data
            rd.write_bundle_files(self.run_dir, cfg, data.src_vocab, data.tgt_vocab, data.subword)

    def _setup_data(self) -> None:
        self.data = TrainingData(self.cfg, self.dist)
        if self.resume:
            self.data.check_same_vocabularies(self.run_dir)

    def _setup_model(self) -> None:
        t = self.cfg.train
        data = self.data
        self.model = Transformer(
            self.cfg.model, len(data.src_vocab), len(data.tgt_vocab), data.src_vocab.pad_id
        ).to(self.device)
        self.n_params = sum(p.numel() for p in self.model.parameters())
        self.translator = Translator(
            self.model, self.cfg, data.src_vocab, data.tgt_vocab, data.subword
        )
        self.validator = Validator(
            self.cfg, data.valid_pairs, data.valid_src, data.valid_refs, self.translator,
            self.device, self.amp_dtype,
        )  # fmt: skip
        self.optimizer = build_optimizer(self.model, t, self.device)
        # A grad scaler only for fp16 on CUDA; bf16 has fp32's range and needs none.
        self.scaler = torch.amp.GradScaler(
            enabled=self.device.type == "cuda" and self.amp_dtype == torch.float16
        )
        self.ddp = None
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            local = [self.dist.local_rank] if self.device.type == "cuda" else None
            # A layer LayerDrop skipped has no gradient in that step: DDP must not wait for it.
            unused = bool(self.cfg.model.layerdrop)
            self.ddp = DistributedDataParallel(
                self.model, device_ids=local, find_unused_parameters=unused
            )
        wrapped = self.ddp or self.model
        self.forward = torch.compile(wrapped) if t.compile else wrapped

    # -- the loop ----------------------------------------------------------------------------

    def train(self) -> Path:
        try:
            return self._train()
        finally:
            self.dist.close()

    def _train(self) -> Path:
        self.setup()
        t = self.cfg.train
        finished = self._finished() if self.resume else None
        if finished and self._ended():  # another step would push out a kept checkpoint: no
            reason, key, value = finished
            log.info(
                "%s is complete (%s); nothing was changed. To train on, raise the budget, e.g. "
                "translator train --resume --run-dir %s --set %s=%s",
                self.run_dir, reason, self.run_dir, key, value,
            )  # fmt: skip
            return self.run_dir
        if finished:  # stopped after its last step, before the end of training: only finish it
            return self._end(finished[0])
        log.info(
            "training %s: %.2fM parameters on %s (%s)%s, run dir %s",
            self.cfg.name,
            self.n_params / 1e6,
            self.device,
            dtype_name(self.amp_dtype),
            f" x {self.dist.world_size} processes" if self.dist.enabled else "",
            self.run_dir,
        )
        self.model.train()
        started = time.perf_counter() - self.elapsed_s
        window, bar = StepWindow(self.device), Progress(self.progress, self.step)
        stop_reason = None
        with self.stopper:
            try:
                while stop_reason is None:
                    if self.cfg.vocab.bpe_dropout:
                        self.data.resample_segmentation()
                    batches = self.data.sampler.epoch(self.epoch)
                    self._epoch_batches = len(batches)
                    if self.planned_steps is None:  # first epoch since start or resume
                        # elapsed_s is 0, or the saved one: the same on every rank
                        self.planned_steps = self._planned_steps(self.elapsed_s)
                        bar.plan(self.planned_steps, self.step)
                    while self.batch_in_epoch < len(batches) and stop_reason is None:
                        group = batches[self.batch_in_epoch : self.batch_in_epoch + t.accumulate]
                        self.batch_in_epoch += len(group)
                        window.add(*self.train_step(group), self.grad_norm)
                        self.elapsed_s = time.perf_counter() - started
                        bar.advance()
                        if self.step % t.log_every == 0:
                            self._log_train(window, bar)
                        if t.valid_every and self.step % t.valid_every == 0:
                            self._validate_and_save()
                        stop_reason = self._agreed_stop()
                    if self.batch_in_epoch >= len(batches):
                        self.epoch += 1
                        self.batch_in_epoch = 0
                        if not t.valid_every:
                            self._validate_and_save()
                        stop_reason = stop_reason or self._agreed_stop()
                if not self.stop_signal:  # a budget was met: the bar ends full, at the real end
                    bar.plan(self.step, self.step)
            finally:
                bar.close()
            if self.stop_signal:
                if self.dist.is_main:
                    self.save_checkpoint(best=False)
                log.warning(
                    "%s. Continue with: translator train --resume --run-dir %s",
                    stop_reason,
                    self.run_dir,
                )
                return self.run_dir
            return self._end(stop_reason)  # inside the handlers: a Ctrl-C here stops cleanly too

    def _end(self, stop_reason: str) -> Path:
        """The end of training: a last validation unless this step had one, checkpoint
        averaging."""
        if self._validated_step != self.step:
            self._validate_and_save()
        if self.cfg.train.average_checkpoints and self.dist.is_main:
            self.average_checkpoints()
        log.info(
            "stopped: %s. Best validation BLEU %.2f. Run dir: %s",
            stop_reason,
            self.best_bleu,
            self.run_dir,
        )
        return self.run_dir

    def _ended(self) -> bool:
        """For a resumed run at its budget: whether the end of training (`_end`) ran at this
        step, from the metrics history. Marks the step as validated if it was."""
        at_step = [r for r in self.history if r.get("step") == self.step]
        if any("val_loss" in r for r in at_step):
            self._validated_step = self.step
        averaging = (
            self.cfg.train.average_checkpoints and len(rd.kept_checkpoints(self.run_dir)) > 1
        )
        averaged = not averaging or any("averaged" in r for r in at_step)
        return self._validated_step == self.step and averaged

    def train_step(self, group: list[np.ndarray]) -> tuple[torch.Tensor, int, int]:
        """One optimizer step over `group` (accumulated batches): the summed loss and the target
        and source tokens it covered. A step whose loss or gradient is not finite changes
        nothing and returns (0, 0, 0); too many of those in a row stop training."""
        self.step += 1
        lr = learning_rate(self.step, self.cfg.train, self.planned_steps)
        # Built from the trainer's current parts each step: wrappers (and tests) may swap them.
        stepper = OptimizerStep(
            self.cfg, self.model, self.forward, self.optimizer, self.scaler, self.ddp,
            self.device, self.amp_dtype, self.data.tgt_vocab,
        )  # fmt: skip
        result = stepper(self.data.train_pairs, group, lr)
        self.grad_norm = result.grad_norm  # before clipping; logged as grad_norm and clipped
        if not result.applied:
            self._skip_step()
        else:
            self.nonfinite_in_a_row = 0
            self.skipped_steps += result.overflowed
        return result.loss, result.n_tgt, result.n_src

    def _skip_step(self) -> None:
        self.skipped_steps += 1
        self.nonfinite_in_a_row += 1
        log.warning("step %d: loss or gradient is NaN/inf; step skipped", self.step)
        if self.nonfinite_in_a_row >= MAX_NONFINITE_IN_A_ROW:
            raise TrainingError(
                f"{self.nonfinite_in_a_row} steps in a row had a NaN/inf loss or gradient "
                f"(step {self.step}); stopped. {self.run_dir} keeps the last good checkpoint; "
                "try a lower train.lr or train.precision=fp32"
            )

    def _agreed_stop(self) -> str | None:
        """This rank's reason to stop, or another rank's: all ranks stop at the same step."""
        reason = self._budget_reached()
        if self.dist.any(reason is not None, self.device) and reason is None:
            reason = "another rank stopped"
        return reason

    def _position(self) -> Position:
        return Position(self.step, self.epoch, self.batch_in_epoch, self.elapsed_s)

    def _planned_steps(self, elapsed_s: float | None = None) -> float | None:
        return planned_steps(self.cfg.train, self._position(), self._epoch_batches, elapsed_s)

    def _finished(self) -> tuple[str, str, str] | None:
        """For a resumed run: (the budget it met, the key to raise, a larger value), or None."""
        t = self.cfg.train
        met = limit_met(t, self._position())
        if met:
            return f"reached {met[0]}={met[1]}", met[0], extended(*met)
        if t.patience and self.bad_validations >= t.patience:
            reason = f"no better validation BLEU in {t.patience} validations"
            return reason, "train.patience", extended("train.patience", t.patience)
        return None

    def _budget_reached(self) -> str | None:
        if self.stop_signal:
            return f"interrupted by {self.stop_signal.name}"
        if self._planned_stop:
            return self._planned_stop
        met = limit_met(self.cfg.train, self._position())
        return f"reached {met[0]}={met[1]}" if met else None

    # -- logging and validation --------------------------------------------------------------

    def _log_train(self, window: StepWindow, bar: Progress) -> None:
        # All ranks' work (a collective in DDP).
        loss, tgt, src, elapsed = self.dist.sum(
            [window.loss.item(), window.tokens, window.src_tokens, self.elapsed_s], self.device
        )
        record = {
            "step": self.step,
            "epoch": round(self.epoch + self.batch_in_epoch / self._epoch_batches, 3),
            "lr": learning_rate(self.step, self.cfg.train, self.planned_steps),
            "elapsed_s": round(self.elapsed_s, 1),
            "skipped_steps": self.skipped_steps,
            **window.summary(loss, tgt, src, self.cfg.train.clip_norm),
        }
        # Re-plan after building the record, so the logged lr is the one this step used;
        # from the ranks' mean clock, so that every rank plans the same learning rates.
        self.planned_steps = self._planned_steps(elapsed / self.dist.world_size)
        bar.plan(self.planned_steps, self.step)  # a time budget: the pace measured so far
        if self.dist.is_main:
            self._record(record)
            bar.show(record, self.elapsed_s)
        window.reset()

    def validation_loss(self) -> float:
        return self.validator.loss()

    def validation_bleu(self) -> float:
        return self.validator.bleu()

    def _validate_and_save(self) -> None:
        started = time.perf_counter()
        self._validated_step = self.step
        if not self.dist.is_main:
            return
        val_loss = self.validation_loss()
        val_bleu = self.validation_bleu()
        improved = val_bleu > self.best_bleu
        if improved:
            self.best_bleu, self.bad_validations = val_bleu, 0
        else:
            self.bad_validations += 1
        record = {
            "step": self.step,
            "epoch": self.epoch,
            "val_loss": round(val_loss, 4),
            "val_ppl": round(math.exp(min(val_loss, 50)), 2),
            "val_bleu": val_bleu,
            "best_bleu": self.best_bleu,
            "elapsed_s": round(self.elapsed_s, 1),
            "valid_s": round(time.perf_counter() - started, 1),
        }
        self._record(record)
        log.info(
            "step %6d  epoch %3d  val_loss %.3f  val_ppl %7.2f  val_bleu %5.2f%s",
            self.step,
            self.epoch,
            val_loss,
            record["val_ppl"],
            val_bleu,
            "  (best)" if improved else "",
        )
        self.save_checkpoint(best=improved)
        if self.cfg.train.average_checkpoints:
            rd.save_weights(self.model, rd.checkpoint_path(self.run_dir, self.step))
            rd.prune_checkpoints(self.run_dir, self.cfg.train.average_checkpoints)
        plot_curves(self.history, self.run_dir / rd.CURVES)
        patience = self.cfg.train.patience
        if patience and self.bad_validations >= patience:
            self._planned_stop = f"no better validation BLEU in {patience} validations"

    def _record(self, record: dict) -> None:
        self.history.append(record)
        rd.append_metrics(self.run_dir, record)

    # -- checkpoints -------------------------------------------------------------------------

    def average_checkpoints(self) -> None:
        """Average the kept checkpoints; the average becomes the best weights if it validates
        at least as well. The model keeps the weights that ended up best."""
        paths = rd.kept_checkpoints(self.run_dir)
        if len(paths) < 2:
            return
        started = time.perf_counter()
        average_into(self.model, paths)
        bleu = self.validation_bleu()
        rd.save_weights(self.model, self.run_dir / rd.AVERAGED)
        kept = bleu >= self.best_bleu
        self._record(
            {
                "step": self.step,
                "averaged": len(paths),
                "val_bleu_averaged": bleu,
                "best_bleu": max(bleu, self.best_bleu),
                "valid_s": round(time.perf_counter() - started, 1),
            }
        )
        log.info(
            "average of the last %d checkpoints: val_bleu %.2f (best single %.2f)%s",
            len(paths),
            bleu,
            self.best_bleu,
            " -> now the best weights" if kept else "",
        )
        if kept:
            self.best_bleu = bleu
            rd.save_weights(self.model, self.run_dir / rd.BEST)
        else:
            rd.load_weights(self.model, self.run_dir / rd.BEST)

    def save_checkpoint(self, best: bool) -> None:
        rd.save_weights(self.model, self.run_dir / rd.LAST)
        # The best weights before the state: once state.pt exists, so does model.safetensors
        # (the first validation is always the best so far), and a killed run can translate.
        if best:
            rd.save_weights(self.model, self.run_dir / rd.BEST)
        state = {
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "best_bleu": self.best_bleu,
            "bad_validations": self.bad_validations,
            "elapsed_s": self.elapsed_s,
            "skipped_steps": self.skipped_steps,
            # The weights travel inside the state, so that a kill between two writes can never
            # pair one step's weights with another step's optimizer.
            "model": rd.unwrap(self.model).state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": torch.get_rng_state(),
        }
        if torch.cuda.is_available():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        rd.save_state(self.run_dir, state)

    def _load_state(self) -> None:
        state = rd.load_state(self.run_dir)
        try:
            rd.unwrap(self.model).load_state_dict(state["model"])
        except (KeyError, RuntimeError) as err:
            raise rd.RunError(
                f"{self.run_dir / rd.STATE} does not hold this run's model: {err}"
            ) from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch, self.best_bleu = state["batch_in_epoch"], state["best_bleu"]
        self.bad_validations, self.elapsed_s = state["bad_validations"], state["elapsed_s"]
        self.skipped_steps = state.get("skipped_steps", 0)
        # Keep the history up to the saved step: later lines belong to work that was lost.
        self.history = rd.keep_metrics_until(self.run_dir, self.step)
        log.info(
            "resuming %s at step %d (epoch %d, batch %d)",
            self.run_dir,
            self.step,
            self.epoch,
            self.batch_in_epoch,
        )
