"""Checkpoints: state.pt (what --resume needs), and averaging the weights saved at the last N
validations.

    save_checkpoint(run_dir, state, model, optimizer, scaler, best=True, keep=10)
    state = load_checkpoint(run_dir, model, optimizer, scaler)   # a TrainingState
    save_best_bleu(run_dir, 38.2)      # the average validated better than the saved best

    paths = run_dir.kept_checkpoints(path)[-10:]
    average_into(model, paths)         # the model now holds the mean of those weights

Averaging the last checkpoints of a run smooths the noise of the final updates and usually gains
BLEU for free (Vaswani et al. 2017 averaged the last 5 or 20; Wu et al. 2021 the last 10).
Training keeps `train.average_checkpoints` of them under `checkpoints/` and averages them at the
end; `translator average` does the same for any run.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path

import torch

from translator import run_dir as rd
from translator.files import atomic_write
from translator.model.weights import load_weights, save_weights, unwrap
from translator.run_dir import RunError, checkpoint_path, prune_checkpoints, read_state
from translator.training.schedule import TrainingState

log = logging.getLogger("translator")


def average_into(model: torch.nn.Module, paths: list[Path]) -> None:
    """Load the mean of the weights in `paths` into `model` (accumulated in fp32)."""
    from safetensors.torch import load_file

    if not paths:
        raise RunError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        try:
            weights = load_file(path)
        except Exception as err:  # a truncated or foreign file: one clear line
            raise RunError(f"cannot read checkpoint {path}: {str(err).splitlines()[0]}") from None
        if total and weights.keys() != total.keys():
            raise RunError(f"checkpoint {path} holds other tensors than {paths[0]}")
        for name, tensor in weights.items():
            total[name] = total.get(name, 0) + tensor.float()
    module = unwrap(model)
    reference = module.state_dict()
    mean = {name: (t / len(paths)).to(reference[name].dtype) for name, t in total.items()}
    # Tied weights are stored once; loading one name fills every parameter that shares it.
    missing, unexpected = module.load_state_dict(mean, strict=False)
    stored = {reference[m].data_ptr() for m in mean}
    untied = [n for n in missing if reference[n].data_ptr() not in stored]
    if unexpected or untied:
        raise RunError(
            f"checkpoints do not match the model "
            f"(missing {untied[:3]}, unexpected {unexpected[:3]})"
        )


def average_if_better(
    model: torch.nn.Module, run: Path, validate_bleu: Callable[[], float], best_bleu: float
) -> dict | None:
    """The end of training: average the run's kept checkpoints into averaged.safetensors; the
    average becomes the best weights if it validates at least as well as `best_bleu`, and the
    model keeps whichever weights ended up best. Returns the metrics record (None: fewer than
    two checkpoints, nothing to average)."""
    paths = rd.kept_checkpoints(run)
    if len(paths) < 2:
        return None
    started = time.perf_counter()
    average_into(model, paths)
    bleu = validate_bleu()
    save_weights(model, run / rd.AVERAGED)
    kept = bleu >= best_bleu
    log.info(
        "average of the last %d checkpoints: val_bleu %.2f (best single %.2f)%s",
        len(paths), bleu, best_bleu, " -> now the best weights" if kept else "",
    )  # fmt: skip
    if kept:
        save_weights(model, run / rd.BEST)
    else:
        load_weights(model, run / rd.BEST)
    return {
        "averaged": len(paths),
        "val_bleu_averaged": bleu,
        "best_bleu": max(bleu, best_bleu),
        "valid_s": round(time.perf_counter() - started, 1),
    }


# -- state.pt: what --resume needs -------------------------------------------------------------


def save_checkpoint(
    path: Path, state: TrainingState, model, optimizer, scaler, best: bool, keep: int = 0
) -> None:
    """last.safetensors, model.safetensors when `best`, state.pt, and (keep > 0) this step's
    weights under checkpoints/, of which the newest `keep` stay."""
    import torch

    save_weights(model, Path(path) / rd.LAST)
    # The best weights before the state: once state.pt exists, so does model.safetensors
    # (the first validation is always the best so far), and a killed run can translate.
    if best:
        save_weights(model, Path(path) / rd.BEST)
    saved = {
        **asdict(state),
        # The weights travel inside the state, so that a kill between two writes can never
        # pair one step's weights with another step's optimizer.
        "model": unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        saved["cuda_rng"] = torch.cuda.get_rng_state_all()
    atomic_write(Path(path) / rd.STATE, lambda tmp: torch.save(saved, tmp))
    if keep:
        save_weights(model, checkpoint_path(path, state.step))
        prune_checkpoints(path, keep)


def save_best_bleu(path: Path, best_bleu: float) -> None:
    """Raise state.pt's best BLEU (the end-of-training average beat it), leaving the rest: a
    resumed run must not take a worse validation for a new best and overwrite those weights."""
    import torch

    saved = read_state(path)
    saved["best_bleu"] = best_bleu
    atomic_write(Path(path) / rd.STATE, lambda tmp: torch.save(saved, tmp))


def load_checkpoint(path: Path, model, optimizer, scaler) -> TrainingState:
    """Restore what save_checkpoint saved into `model`, `optimizer`, `scaler` and the RNGs."""
    import torch

    saved = read_state(path)
    try:
        unwrap(model).load_state_dict(saved["model"])
    except (KeyError, RuntimeError) as err:
        raise RunError(f"{Path(path) / rd.STATE} does not hold this run's model: {err}") from None
    optimizer.load_state_dict(saved["optimizer"])
    if saved["scaler"] or not scaler.is_enabled():
        scaler.load_state_dict(saved["scaler"])
    else:  # saved without a scaler (bf16, fp32, another device), resumed with fp16
        log.info("resuming in fp16 from a run saved without a grad scaler: it starts afresh")
    torch.set_rng_state(saved["rng"])
    if "cuda_rng" in saved and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(saved["cuda_rng"])
    numbers = {f.name for f in fields(TrainingState)}
    return TrainingState(**{name: value for name, value in saved.items() if name in numbers})
