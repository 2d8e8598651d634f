import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from translator.model import loss
from translator.model.loss import dropout_consistency_loss, sequence_loss


def reference(logits, labels, pad_id, smoothing):
    return F.cross_entropy(
        logits.flatten(0, 1),
        labels.flatten(),
        ignore_index=pad_id,
        label_smoothing=smoothing,
        reduction="sum",
    )


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("rows_per_block", [1, 5, 128])  # blocks that split rows unevenly too
def test_blocked_loss_and_gradient_equal_pytorch_cross_entropy(
    monkeypatch, smoothing, rows_per_block
):
    monkeypatch.setattr(loss, "ROWS_PER_BLOCK", rows_per_block)
    torch.manual_seed(0)
    logits = (torch.randn(3, 9, 50) * 4).requires_grad_()
    labels = torch.randint(1, 50, (3, 9))
    labels[0, 6:] = 0  # padding
    labels[2, 1:] = 0
    ours = sequence_loss(logits, labels, 0, smoothing)
    (ours_grad,) = torch.autograd.grad(ours * 0.7, logits)
    theirs = reference(logits, labels, 0, smoothing)
    (theirs_grad,) = torch.autograd.grad(theirs * 0.7, logits)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    assert torch.allclose(ours_grad, theirs_grad, atol=1e-6)
    assert (ours_grad[labels == 0] == 0).all()  # pad positions learn nothing


@pytest.mark.parametrize("rows_per_block", [1, 5, 128])
def test_dropout_consistency_loss_and_gradients_equal_the_symmetric_kl(monkeypatch, rows_per_block):
    monkeypatch.setattr(loss, "ROWS_PER_BLOCK", rows_per_block)
    torch.manual_seed(0)
    a = (torch.randn(3, 9, 50) * 3).requires_grad_()
    b = (torch.randn(3, 9, 50) * 3).requires_grad_()
    labels = torch.randint(1, 50, (3, 9))
    labels[0, 6:] = 0  # padding
    keep = labels.flatten() != 0
    log_a = F.log_softmax(a.flatten(0, 1)[keep], -1)
    log_b = F.log_softmax(b.flatten(0, 1)[keep], -1)
    kl_ab = F.kl_div(log_b, log_a, log_target=True, reduction="sum")  # KL(a||b)
    kl_ba = F.kl_div(log_a, log_b, log_target=True, reduction="sum")
    theirs = (kl_ab + kl_ba) / 2
    ours = dropout_consistency_loss(a, b, labels, 0)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    ours_grads = torch.autograd.grad(ours * 0.7, (a, b))
    theirs_grads = torch.autograd.grad(theirs * 0.7, (a, b))
    for mine, ref in zip(ours_grads, theirs_grads):
        assert torch.allclose(mine, ref, atol=1e-6)
        assert (mine[labels == 0] == 0).all()  # pad positions learn nothing
    assert dropout_consistency_loss(a, a, labels, 0).item() == pytest.approx(0.0, abs=1e-5)


def test_bf16_logits_are_scored_in_fp32():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 30).to(torch.bfloat16).requires_grad_()
    labels = torch.randint(1, 30, (2, 5))
    ours = sequence_loss(logits, labels, 0, 0.1)
    ours.backward()
    assert ours.dtype == torch.float32
    assert logits.grad.dtype == torch.bfloat16
    assert ours.item() == pytest.approx(reference(logits.float(), labels, 0, 0.1).item(), rel=1e-5)


RESIDENT_AFTER_FREE = """
import torch
from translator.allocator import keep_freed_memory

def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

assert keep_freed_memory()
before = resident_mb()
big = torch.ones(64 * 2**20 // 4)  # 64 MB, above glibc's largest mmap threshold
del big
print(resident_mb() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_large_tensors_stay_with_the_process_for_reuse():
    # A fresh process: in this one, earlier tests may have left freed memory resident already.
    out = subprocess.run(
        [sys.executable, "-c", RESIDENT_AFTER_FREE], capture_output=True, text=True, check=True
    )
    # Returned to the OS, the next step would fault in and zero these pages all over again.
    assert float(out.stdout) > 48
