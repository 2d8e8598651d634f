"""One optimizer step: fp16's grad scaler through a NaN loss, and how accumulated batches weigh."""

import dataclasses

import numpy as np
import torch
from conftest import nan_logits_at_step, tiny

from translator.training.trainer import Trainer


def test_a_nan_loss_under_fp16_scaling_skips_the_step_and_the_next_step_runs(toy_data, tmp_path):
    """The grad scaler unscales before the finiteness check; a skipped step must still close
    the scaler's step, or the next step's unscale_ raises and training dies at its first NaN."""
    trainer = Trainer(tiny(toy_data), run_dir=tmp_path / "r", progress=False)
    trainer.setup()
    trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)  # fp16's scaler, on CPU
    nan_logits_at_step(trainer, 2)
    batches = trainer.data.sampler.epoch(0)
    for i in range(4):
        trainer.train_step([batches[i]])
    assert trainer.state.step == 4 and trainer.state.skipped_steps == 1
    assert trainer.nonfinite.in_a_row == 0  # steps 3 and 4 were applied
    assert trainer.scaler.get_scale() < 2.0**10  # the NaN gradients lowered the scale
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_accumulated_batches_weigh_each_target_token_equally(toy_data, tmp_path):
    """A step over a short and a long batch (accumulate 2) moves the weights as one step over
    one batch holding both: the loss is divided by the group's target tokens, not averaged over
    per-batch means (which would weigh the short batch's tokens more). Plain SGD momentum keeps
    the move proportional to the gradient."""
    short, long = np.arange(0, 2), np.arange(2, 40)
    moves = []
    for group in ([short, long], [np.concatenate([short, long])]):
        cfg = tiny(
            toy_data,
            "train.optimizer=nag",
            "train.clip_norm=null",
            "train.lr=0.1",
            "train.precision=fp32",
        )  # bf16 would round the two shapes differently
        cfg = dataclasses.replace(
            cfg, train=dataclasses.replace(cfg.train, accumulate=len(group), warmup_steps=0)
        )
        trainer = Trainer(cfg, run_dir=tmp_path / f"a{len(group)}", progress=False)
        trainer.setup()
        before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
        trainer.train_step(group)
        moves.append({n: p.detach() - before[n] for n, p in trainer.model.named_parameters()})
    for name, move in moves[0].items():
        torch.testing.assert_close(move, moves[1][name], rtol=1e-4, atol=1e-7)
