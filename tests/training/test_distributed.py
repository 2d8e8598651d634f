"""Data-parallel training: two gloo processes on CPU match one process with the same batches."""

import subprocess
import sys

import pytest
import torch
from conftest import train_command
from safetensors.torch import load_file

from translator import run_dir as rd
from translator.data.batching import TokenBatchSampler


def _train(toy_data, run, nproc, *extra):
    command = train_command(
        toy_data,
        run,
        "train.max_steps=12",
        "train.log_every=2",
        "train.valid_every=6",
        "train.precision=fp32",  # bf16 rounding would hide what the comparison checks
        *extra,
        options=("--nproc", str(nproc)),
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    # torchrun's failure summary alone is ~2,500 characters: keep the training log before it
    assert done.returncode == 0, done.stderr[-8000:]
    return rd.read_metrics(run)


@pytest.mark.slow  # `make test-all` and CI run it; `make test` skips it
def test_two_gloo_processes_train_like_one_process_accumulating_two_batches(toy_data, tmp_path):
    single = _train(toy_data, tmp_path / "one", 1, "train.accumulate=2")
    double = _train(toy_data, tmp_path / "two", 2)
    loss_1 = [r["train_loss"] for r in single if "train_loss" in r]
    loss_2 = [r["train_loss"] for r in double if "train_loss" in r]
    assert len(loss_1) == len(loss_2) == 6
    assert loss_2[-1] < loss_2[0]  # it trains
    assert all(abs(a - b) < 1e-3 for a, b in zip(loss_1, loss_2)), (loss_1, loss_2)
    # Rank 0 alone wrote the history and the weights; they match the single process's.
    assert [r["step"] for r in double if "val_bleu" in r] == [6, 12]
    a, b = load_file(tmp_path / "one" / rd.LAST), load_file(tmp_path / "two" / rd.LAST)
    for name in a:
        x, y = a[name], b[name]
        if name.endswith("w_kv.bias"):
            # A key bias shifts every attention score of a query alike, so softmax gives it zero
            # gradient: what it gets is rounding noise, which Adam scales up to full steps.
            x, y = x[len(x) // 2 :], y[len(y) // 2 :]
        assert torch.allclose(x, y, atol=1e-5), name


def test_ranks_share_each_epoch_and_step_in_lockstep():
    lengths = torch.randint(2, 30, (2, 500)).numpy()
    for world, accumulate in ((2, 1), (3, 2)):
        shards = [
            TokenBatchSampler(
                *lengths, 300, seed=1, rank=r, world_size=world, accumulate=accumulate
            ).epoch(0)
            for r in range(world)
        ]
        assert len({len(s) for s in shards}) == 1 and len(shards[0]) % accumulate == 0
        seen = sorted(i for s in shards for batch in s for i in batch)
        assert seen == list(range(500))


# A worker whose gloo threads still hold tensors when it ends. In training, DDP keeps the process
# group and its threads alive to the end; here no close() does the same. Both processes share one
# core (`taskset -c 0`), so a gloo thread often has yet to release the last all-reduce when the
# main thread finishes. Left to the interpreter's teardown (sys.exit), 9 of 10 such runs abort
# with SIGABRT here; `Distributed.exit` must end every one, with its code.
WORKER = """
import torch
from translator.training.distributed import Distributed

cpu = torch.device("cpu")
dist = Distributed.from_environment("cpu")
for _ in range(200):
    dist.any(False, cpu)
    dist.sum([1.0, 2.0], cpu)
print(f"rank {dist.rank} done", flush=True)  # one write: the two workers share a pipe
dist.exit(3)
"""


@pytest.mark.slow
def test_a_finished_worker_exits_with_its_code_while_gloo_threads_are_busy(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command = ["taskset", "-c", "0", *torchrun, "--nproc_per_node=2", str(script)]
    for _ in range(3):
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert "terminate called" not in done.stderr, done.stderr[-3000:]
        # torchrun reports the workers' own exit code, 3, as a failure; the output was flushed
        assert done.returncode == 1 and "exitcode  : 3" in done.stderr, done.stderr[-3000:]
        assert "rank 0 done" in done.stdout and "rank 1 done" in done.stdout
