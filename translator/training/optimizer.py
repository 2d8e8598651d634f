"""The optimizer a config asks for: Adam, AdamW, or SGD with Nesterov momentum (fairseq's nag).

    optimizer = build_optimizer(model, cfg.train, device)

One parameter group: every weight gets the same learning rate (set per step by the schedule)
and weight decay. On CUDA the update runs as one fused kernel; elsewhere PyTorch's default
multi-tensor (foreach) path.
"""

from __future__ import annotations

import torch

from translator.config import TrainConfig
from translator.training.schedule import learning_rate


def build_optimizer(
    model: torch.nn.Module, cfg: TrainConfig, device: torch.device
) -> torch.optim.Optimizer:
    params = [{"params": list(model.parameters())}]
    common = dict(
        lr=learning_rate(1, cfg),
        weight_decay=cfg.weight_decay,
        fused=device.type == "cuda" or None,  # None: PyTorch picks foreach where it can
    )
    if cfg.optimizer == "nag":
        return torch.optim.SGD(params, momentum=cfg.momentum, nesterov=True, **common)
    adam = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    return adam(params, betas=cfg.betas, **common)
