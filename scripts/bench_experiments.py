"""What experiment tracking costs: TensorBoard during training, `runs` over many run dirs, and
`compare` of two runs whose outputs are recorded.

    python scripts/bench_experiments.py tensorboard --steps 300      # the default config, on/off
    python scripts/bench_experiments.py runs RUN --copies 100        # `translator runs` of 100 runs
    python scripts/bench_experiments.py compare RUN_A RUN_B          # recorded outputs: seconds

tensorboard: trains the same steps with train.tensorboard on and off, in the order off, on, on,
off, on, off (a steady drift of the machine's speed cancels out), and reports the training
tokens/s of each from metrics.jsonl and the seconds the trainer spent inside TensorBoard calls
(timed around each call). runs: hard-links RUN's files into COPIES run dirs (no extra disk) and
times listing them. compare: times `translator compare --json` in-process after a first call
has recorded both runs' outputs.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from typer.testing import CliRunner

from translator import run_dir as rd
from translator.cli.main import app


def bench_tensorboard(args) -> None:
    from translator.config import load_config
    from translator.training import tensorboard
    from translator.training.trainer import Trainer

    spent = {"s": 0.0}
    for name in ("record", "samples", "close"):
        original = getattr(tensorboard.TensorBoard, name)

        def timed(self, *a, _original=original, **k):
            started = time.perf_counter()
            try:
                return _original(self, *a, **k)
            finally:
                spent["s"] += time.perf_counter() - started

        setattr(tensorboard.TensorBoard, name, timed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, on in enumerate((False, True, True, False, True, False)):  # ABBA: drift cancels
            spent["s"] = 0.0
            overrides = [f"train.max_steps={args.steps}", f"train.valid_every={args.steps // 2}",
                         f"train.tensorboard={str(on).lower()}", *args.set]  # fmt: skip
            cfg = load_config(args.config, overrides)
            started = time.perf_counter()
            run = Trainer(cfg, Path(tmp) / f"run{i}", progress=False).train()
            total = time.perf_counter() - started
            train = [r for r in rd.read_metrics(run) if "tokens_per_s" in r]
            rows.append(
                (on, statistics.median(r["tokens_per_s"] for r in train), total, spent["s"])
            )
    print(
        f"{'tensorboard':>11} {'train tok/s':>12} {'run s':>7} {'in TB calls s':>14} {'share':>7}"
    )
    for on, speed, total, tb in rows:
        print(f"{str(on):>11} {speed:12.0f} {total:7.1f} {tb:14.3f} {100 * tb / total:6.2f}%")
    off = statistics.mean(r[1] for r in rows if not r[0])
    on = statistics.mean(r[1] for r in rows if r[0])
    print(f"mean train tok/s: off {off:.0f}, on {on:.0f} ({100 * (on / off - 1):+.1f}%)")


def bench_runs(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.copies):
            copy = Path(tmp) / f"run-{i:03d}"
            shutil.copytree(args.run, copy, copy_function=os.link)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            result = CliRunner().invoke(app, ["runs", tmp, "--json"])
            times.append(time.perf_counter() - started)
            assert result.exit_code == 0, result.output
        n = len(json.loads(result.stdout))
    print(f"translator runs: {n} run dirs in {min(times):.2f} s (best of 3; {times})")


def bench_compare(args) -> None:
    command = ["compare", str(args.run_a), str(args.run_b), "--json"]
    first = CliRunner().invoke(app, command)  # decodes what is not recorded yet
    assert first.exit_code == 0, first.output
    times = []
    for _ in range(3):
        started = time.perf_counter()
        result = CliRunner().invoke(app, command)
        times.append(time.perf_counter() - started)
        assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"translator compare, outputs recorded: {report['n']} sentences, "
          f"{report['bootstrap_samples']} bootstrap samples, {report['ar_trials']} AR trials: "
          f"{min(times):.2f} s (best of 3; {[round(t, 2) for t in times]})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    tb = sub.add_parser("tensorboard")
    tb.add_argument("-c", "--config", default=None)
    tb.add_argument("--steps", type=int, default=300)
    tb.add_argument("--set", action="append", default=[])
    runs = sub.add_parser("runs")
    runs.add_argument("run", type=Path)
    runs.add_argument("--copies", type=int, default=100)
    compare = sub.add_parser("compare")
    compare.add_argument("run_a", type=Path)
    compare.add_argument("run_b", type=Path)
    args = parser.parse_args()
    {"tensorboard": bench_tensorboard, "runs": bench_runs, "compare": bench_compare}[args.what](
        args
    )


if __name__ == "__main__":
    main()
