"""GPU paths: run where CUDA is available (scripts/gpu_check.sh runs them), skipped elsewhere."""

import conftest
import pytest
import torch

from translator.device import resolve_precision
from translator.training.trainer import Trainer

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def tiny(data_dir, *extra):
    return conftest.tiny(data_dir, "train.device=cuda", *extra)


@cuda
def test_auto_precision_on_cuda_is_bf16_where_supported_else_fp16():
    dtype = resolve_precision("auto", torch.device("cuda"))
    assert dtype == (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


@cuda
@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
def test_training_on_cuda_lowers_the_loss(toy_data, tmp_path, precision):
    trainer = Trainer(
        tiny(toy_data, f"train.precision={precision}", "train.max_steps=30", "train.log_every=10"),
        run_dir=tmp_path / precision,
        progress=False,
    )
    step = trainer.train_step

    def noting_the_math(group):
        trainer.math_while_training = (
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cuda.cudnn_sdp_enabled(),  # its per-shape plans made bf16 7x slower
        )
        return step(group)

    trainer.train_step = noting_the_math
    trainer.train()
    losses = [r["train_loss"] for r in trainer.history if "train_loss" in r]
    assert losses[-1] < losses[0]
    assert trainer.device.type == "cuda" and trainer.scaler.is_enabled() == (precision == "fp16")
    assert trainer.math_while_training == (True, False)  # TF32 on, cuDNN attention off
    assert trainer.optimizer.defaults.get("fused")


@cuda
def test_fp16_overflow_steps_are_skipped_and_counted(toy_data, tmp_path):
    trainer = Trainer(
        tiny(toy_data, "train.precision=fp16", "train.max_steps=3"),
        run_dir=tmp_path / "r",
        progress=False,
    )
    trainer.setup()
    trainer.scaler = torch.amp.GradScaler("cuda", init_scale=2.0**40)  # overflows at once
    batches = trainer.data.sampler.epoch(0)
    for i in range(3):
        trainer.train_step([batches[i]])
    assert trainer.state.skipped_steps >= 1
    assert trainer.scaler.get_scale() < 2.0**40


@cuda
def test_an_fp16_nan_loss_skips_the_step_and_training_goes_on(toy_data, tmp_path):
    trainer = Trainer(
        tiny(toy_data, "train.precision=fp16", "train.max_steps=4"),
        run_dir=tmp_path / "r",
        progress=False,
    )
    trainer.setup()
    conftest.nan_logits_at_step(trainer, 2)
    batches = trainer.data.sampler.epoch(0)
    for i in range(4):
        trainer.train_step([batches[i]])
    assert trainer.state.skipped_steps >= 1 and trainer.nonfinite.in_a_row == 0
