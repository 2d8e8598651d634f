"""Training speed of a config on this machine: tokens/s, seconds per epoch, peak RSS and MFU.

    python scripts/bench_train.py                                   # default config, auto precision
    python scripts/bench_train.py --precisions fp32 bf16 --steps 30
    python scripts/bench_train.py -c configs/seed.yaml --set model.d_model=256

Runs the real training step (translator.training.trainer.Trainer.train_step) on real
Multi30k batches for `--warmup` steps, then times `--steps` more. Model FLOPs are counted exactly by
torch.utils.flop_counter on the same batches (forward + backward), and MFU divides the achieved
FLOP/s by this machine's peak, measured here with a large GEMM in the dtype each variant runs
in (not assumed).
Compare precisions or configs within one invocation: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import functools
import resource
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from translator.config import load_config
from translator.data.batching import make_batch
from translator.device import cpu_has_bf16, cuda_training_math
from translator.training.trainer import Trainer


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@functools.cache  # measured once per dtype, and only for the precisions benchmarked
def gemm_peak(dtype: torch.dtype, device: torch.device, n: int = 4096, repeats: int = 5) -> float:
    """FLOP/s of an n x n matmul, best of `repeats` (fp32 on CUDA runs as TF32 here)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True  # as in training
        n, repeats = 8192, 20
    if device.type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bf16():
        n = 1024  # emulated bf16 runs at a few GFLOP/s: a 4096 GEMM would take minutes
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        started = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - started)
    return 2 * n**3 / best


def step_flops(trainer: Trainer, group: list[list[int]]) -> int:
    """FLOPs of forward + backward over one step's batches (the optimizer's are negligible)."""
    vocab = trainer.data.tgt_vocab
    counter = FlopCounterMode(display=False)
    with counter:
        for indices in group:
            batch = make_batch(
                trainer.data.train_pairs, indices, vocab.pad_id, vocab.sos_id, vocab.eos_id
            ).to(trainer.device)
            logits = trainer.model(batch.src, batch.tgt_in)
            logits.float().sum().backward()
    trainer.model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def bench(cfg, steps: int, warmup: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(cfg, run_dir=Path(tmp) / "run", progress=False)
        trainer.setup()
        with cuda_training_math(trainer.device):  # as Trainer.train() runs its steps
            return _timed(trainer, cfg, steps, warmup)


def _timed(trainer, cfg, steps: int, warmup: int) -> dict:
    """Target and all tokens per second, epoch time and FLOP/s over `steps` steps."""
    trainer.model.train()
    batches = trainer.data.sampler.epoch(0)
    acc = cfg.train.accumulate
    groups = [batches[i : i + acc] for i in range(0, len(batches), acc)]
    groups = (groups * (1 + (warmup + steps) // len(groups)))[: warmup + steps]
    for group in groups[:warmup]:
        trainer.train_step(group)
    tgt = src = 0
    sync(trainer.device)
    started = time.perf_counter()
    for group in groups[warmup:]:
        _, n_tgt, n_src = trainer.train_step(group)
        tgt, src = tgt + n_tgt, src + n_src
    sync(trainer.device)
    seconds = time.perf_counter() - started
    flops = sum(step_flops(trainer, group) for group in groups[warmup:])
    epoch_tgt = int(trainer.data.train_pairs.tgt.lengths().sum() + len(trainer.data.train_pairs))
    return {
        "tgt_s": tgt / seconds,
        "all_s": (tgt + src) / seconds,
        "epoch_s": epoch_tgt / (tgt / seconds),
        "flop_s": flops / seconds,
        "dtype": trainer.amp_dtype,
        "params": trainer.n_params,
        "device": trainer.device,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--config", type=Path, default=None)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument(
        "--precisions", nargs="+", default=["auto"], help="fp32, bf16, auto (each run in turn)"
    )
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    args = parser.parse_args()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    where = (
        torch.cuda.get_device_name()
        if device.type == "cuda"
        else f"{torch.get_num_threads()} threads"
    )
    print(f"on {where}; MFU = model FLOP/s / GEMM peak of the variant's dtype (both measured)")
    variants = [(p, False) for p in args.precisions]
    if args.compile:
        variants += [(p, True) for p in args.precisions]
    print(
        f"{'variant':<18}{'tgt tok/s':>10}{'src+tgt/s':>10}{'s/epoch':>9}{'GFLOP/s':>9}"
        f"{'peak':>7}{'MFU':>7}"
    )
    for precision, compiled in variants:
        cfg = load_config(
            args.config,
            [
                *args.overrides,
                f"train.precision={precision}",
                f"train.compile={str(compiled).lower()}",
            ],
        )
        r = bench(cfg, args.steps, args.warmup)
        peak = gemm_peak(r["dtype"] or torch.float32, device)
        name = f"{precision}{'+compile' if compiled else ''}"
        print(
            f"{name:<18}{r['tgt_s']:>10.0f}{r['all_s']:>10.0f}{r['epoch_s']:>9.0f}"
            f"{r['flop_s'] / 1e9:>9.1f}{peak / 1e9:>7.0f}{r['flop_s'] / peak:>7.1%}"
        )
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model: {r['params'] / 1e6:.2f}M parameters; peak RSS of this process {rss:.0f} MB")
    if device.type == "cuda":
        print(f"peak GPU memory: {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
