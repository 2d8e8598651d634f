"""Pictures of a run: learning curves and cross-attention heatmaps, saved as PNG (atomically).

    plot_curves(history, run_dir / "curves.png")            # from metrics.jsonl records
    plot_attention(src_labels, out_labels, weights, path)   # weights (layers, T, S)

matplotlib is imported inside the functions with the non-interactive Agg backend, so nothing here
needs a display and importing the module costs nothing.
"""

from __future__ import annotations

from pathlib import Path

from translator.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path, dpi: int = 90) -> None:
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight"))


def plot_curves(history: list[dict], path: Path) -> None:
    """Training and validation loss, and validation BLEU, against optimizer steps."""
    plt = _pyplot()
    train = [r for r in history if "train_loss" in r]
    valid = [r for r in history if "val_bleu" in r]
    fig, (ax_loss, ax_bleu) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_loss.plot(
        [r["step"] for r in train], [r["train_loss"] for r in train], label="train (label-smoothed)"
    )
    ax_loss.plot(
        [r["step"] for r in valid], [r["val_loss"] for r in valid], "o-", label="validation"
    )
    ax_loss.set(xlabel="step", ylabel="loss per token", title="Loss")
    ax_loss.legend()
    ax_bleu.plot(
        [r["step"] for r in valid], [r["val_bleu"] for r in valid], "o-", color="C2",
        label="validation",
    )  # fmt: skip
    # train.keep_eval: a fine-tuned run's other sets, to see what it keeps of what it knew
    kept = [r for r in valid if "keep_bleu" in r]
    kept_names = list(dict.fromkeys(name for r in kept for name in r["keep_bleu"]))
    for name in kept_names:
        points = [(r["step"], r["keep_bleu"][name]) for r in kept if name in r["keep_bleu"]]
        ax_bleu.plot(*zip(*points), "s--", label=name)
    if kept_names:
        ax_bleu.legend()
    ax_bleu.set(xlabel="step", ylabel="BLEU", title="Validation BLEU (greedy)")
    for ax in (ax_loss, ax_bleu):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)


def plot_attention(src_labels: list[str], out_labels: list[str], weights, path: Path) -> None:
    """One heatmap per decoder layer: output tokens (rows) x source tokens (columns), labelled
    as given (the caller drops joiner marks).

    weights: array-like (layers, T, S), already averaged over heads.
    """
    plt = _pyplot()
    layers = len(weights)
    width = max(4.0, 0.45 * len(src_labels) + 1.5)
    height = max(3.0, 0.35 * len(out_labels) + 1.5)
    fig, axes = plt.subplots(1, layers, figsize=(width * layers, height), squeeze=False)
    for layer, ax in enumerate(axes[0]):
        image = ax.imshow(weights[layer], cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_xticks(range(len(src_labels)), src_labels, rotation=60, ha="right")
        ax.set_yticks(range(len(out_labels)), out_labels)
        ax.set_title(f"decoder layer {layer + 1} (mean over heads)")
        ax.set_xlabel("source")
        if layer == 0:
            ax.set_ylabel("output")
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="attention")
    _save(fig, path, dpi=110)
    plt.close(fig)
