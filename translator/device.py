"""Where and in what precision to train: the device and the autocast dtype a config asks for,
and what this machine can give.

    device = resolve_device("auto")                  # cuda, then mps, then cpu
    device = training_device("auto")                 # the same, its memory set up for training
    with cuda_training_math(device): ...             # TF32, no cuDNN attention, while training
    dtype = resolve_precision("auto", device)        # bf16 on CUDA and on CPUs with native bf16
    scaler = grad_scaler(device, dtype)              # enabled for fp16 on CUDA only
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import torch

from translator.allocator import keep_freed_memory
from translator.config import ConfigError

log = logging.getLogger("translator")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device is cuda but no CUDA GPU is available")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("train.device is mps but Apple MPS is not available")
    return torch.device(name)


def training_device(name: str) -> torch.device:
    """The device train.device names; on CPU, the allocator keeps freed memory (big logits
    tensors otherwise page-fault in every step)."""
    device = resolve_device(name)
    if device.type == "cpu":
        keep_freed_memory()
    return device


@contextmanager
def cuda_training_math(device: torch.device):
    """While training on CUDA: fp32 matmuls on tensor cores (TF32), and no cuDNN attention,
    which plans anew for every batch shape (length-bucketed batches have hundreds: bf16 steps
    ran 7x slower on an H100 with it, 11.7k against 84k target tok/s, scripts/bench_train.py).
    These flags are the process's: they come back as they were when training ends."""
    if device.type != "cuda":
        yield
        return
    matmul, cudnn = torch.backends.cuda.matmul, torch.backends.cudnn
    saved = (matmul.allow_tf32, cudnn.allow_tf32, torch.backends.cuda.cudnn_sdp_enabled())
    matmul.allow_tf32 = cudnn.allow_tf32 = True
    torch.backends.cuda.enable_cudnn_sdp(False)
    try:
        yield
    finally:
        matmul.allow_tf32, cudnn.allow_tf32 = saved[0], saved[1]
        torch.backends.cuda.enable_cudnn_sdp(saved[2])


def cpu_has_bf16() -> bool:
    """AVX-512 BF16 or AMX: the CPU runs bf16 matmuls natively."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (None: fp32). Unsupported choices fall back with a warning."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and cpu_has_bf16():
            return torch.bfloat16
        return None
    if precision == "fp32":
        return None
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    if device.type == "cpu" and dtype == torch.float16:
        log.warning("fp16 is not supported on CPU; training in fp32")
        return None
    return dtype


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A working grad scaler only for fp16 on CUDA; bf16 has fp32's range and needs none."""
    return torch.amp.GradScaler(enabled=device.type == "cuda" and dtype == torch.float16)


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16 autocast", torch.float16: "fp16 autocast"}[dtype]
