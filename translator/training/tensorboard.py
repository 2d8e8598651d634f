"""TensorBoard logs of a run, beside metrics.jsonl: `tensorboard --logdir runs` shows every run.

    board = TensorBoard.open(run_dir, cfg, step)   # None with train.tensorboard: false
    board.record(record)                           # a metrics.jsonl record, as scalars
    board.samples(step, samples)                   # (source, reference, output) of validation
    board.close(best_bleu)                         # the config and final scores as hparams

metrics.jsonl stays the source of truth; these events mirror it under the same names (a
`keep_bleu` set `parent:valid` becomes `keep_bleu/parent:valid`). A resumed run reopens the
same folder with `purge_step`, so the steps that the interruption lost, logged once already, are
hidden rather than shown twice. The writer queues events and a background thread writes them.
"""

from __future__ import annotations

from pathlib import Path

from translator.config import Config, flat_config
from translator.run_dir import TENSORBOARD

NOT_SCALARS = {"step"}  # the x axis, not a curve


class TensorBoard:
    def __init__(self, writer) -> None:
        self.writer = writer

    @classmethod
    def open(cls, run_dir: Path, cfg: Config, step: int) -> TensorBoard | None:
        """The run's writer (only on the main process), or None when train.tensorboard is off.
        `step`: where training starts; later events already in the folder are purged."""
        if not cfg.train.tensorboard:
            return None
        from torch.utils.tensorboard import SummaryWriter

        folder = str(Path(run_dir) / TENSORBOARD)
        writer = SummaryWriter(log_dir=folder, purge_step=step + 1 if step else None)
        board = cls(writer)
        if step == 0:
            board.writer.add_text("config", _config_table(cfg), 0)
        return board

    def record(self, record: dict) -> None:
        step = record["step"]
        for key, value in record.items():
            if key in NOT_SCALARS:
                continue
            if isinstance(value, dict):  # keep_bleu: one curve per set
                for name, inner in value.items():
                    self.writer.add_scalar(f"{key}/{name}", inner, step)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)

    def samples(self, step: int, samples: list[tuple[str, str, str]]) -> None:
        """A few validation sentences: source, reference and the model's greedy output."""
        rows = ["| source | reference | output |", "|---|---|---|"]
        rows += [f"| {_cell(s)} | {_cell(r)} | {_cell(h)} |" for s, r, h in samples]
        self.writer.add_text("val_samples", "\n".join(rows), step)

    def close(self, cfg: Config | None = None, final: dict | None = None) -> None:
        """Flush and close; with `final`, the config's keys and these scores as hparams (the
        HParams tab compares runs by them)."""
        if cfg is not None and final:
            hparams = {k: _hparam(v) for k, v in flat_config(cfg).items()}
            self.writer.add_hparams(hparams, {f"hparams/{k}": v for k, v in final.items()},
                                    run_name=".")  # fmt: skip
        self.writer.close()


def _hparam(value):
    """TensorBoard's hparams take numbers, strings and booleans."""
    return value if isinstance(value, (int, float, str, bool)) else str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _config_table(cfg: Config) -> str:
    rows = ["| key | value |", "|---|---|"]
    rows += [f"| {k} | {_cell(str(v))} |" for k, v in flat_config(cfg).items()]
    return "\n".join(rows)
