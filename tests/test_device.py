"""Device settings: what training changes in the process, and that it changes it back."""

import torch

from translator.device import cuda_training_math


def cuda_math() -> tuple[bool, bool, bool]:
    return (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.cudnn_sdp_enabled(),
    )


def test_training_on_cuda_sets_its_math_flags_only_while_it_trains():
    """TF32 and no cuDNN attention make CUDA training fast, but they are the process's: a
    program that trains, then does its own work, gets its own settings back. (The flags can
    be set without a GPU, so this runs anywhere.)"""
    before = cuda_math()
    with cuda_training_math(torch.device("cuda")):
        assert cuda_math() == (True, True, False)
    assert cuda_math() == before
    with cuda_training_math(torch.device("cpu")):
        assert cuda_math() == before  # CPU training leaves them alone
