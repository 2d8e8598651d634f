"""A run's weights (safetensors) and the model they belong to.

    run = load_run(Path("runs/a"))                 # the bundle and its best model, in eval mode
    save_weights(model, path); load_weights(model, path)

Weights are safetensors: loading a run never executes code.
"""

from __future__ import annotations

from pathlib import Path

from translator.data.bundle import Run, read_bundle
from translator.files import atomic_write
from translator.model.transformer import Transformer
from translator.run_dir import BEST, RunError


def load_run(path: Path, weights: str = BEST, device: str = "cpu") -> Run:
    """Rebuild the model of a run dir from the bundle alone."""
    run = read_bundle(path)
    model = Transformer(run.cfg.model, len(run.src_vocab), len(run.tgt_vocab), run.src_vocab.pad_id)
    load_weights(model, run.path / weights)
    run.model = model.to(device).eval()
    return run


def save_weights(model, path: Path) -> None:
    from safetensors.torch import save_model

    atomic_write(path, lambda tmp: save_model(unwrap(model), tmp))


def load_weights(model, path: Path) -> None:
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    if not path.exists():
        raise RunError(f"weights file {path} is missing")
    try:
        missing, unexpected = load_model(unwrap(model), path, strict=False)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise RunError(f"cannot load weights {path}: {str(err).splitlines()[0]}") from None
    if missing or unexpected:
        raise RunError(
            f"weights {path} do not match the model in its config.yaml "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )


def unwrap(model):
    """The plain module inside torch.compile / DDP wrappers."""
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)
