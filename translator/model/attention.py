"""Attention, as the Transformer uses it: the scaled dot-product kernel (fused, with a plain
reference that also returns the weights), multi-head attention, and the key/value caches that
let the decoder add one token at a time.

    attn = MultiHeadAttention(d_model, n_heads, dropout, records=True)
    out = attn(x, source, mask, cache=cache, static_kv=True)    # cross-attention, cached K/V
    with recording_attention() as weights:                     # heatmaps: this thread's
        model(src, tgt_in)                                      # recording modules' weights

Masks are boolean with True = "may attend", the convention of
torch.nn.functional.scaled_dot_product_attention.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> Tensor:
    """softmax(Q Kᵀ / √d_k) V through PyTorch's fused kernels.

    q (B, h, T, d_k), k and v (B, h, S, d_k); mask broadcastable to (B, h, T, S), True = attend.
    """
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal
    )


def reference_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    *,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """softmax(Q Kᵀ / √d_k) V written out; returns (output (B, h, T, d_k), weights (B, h, T, S))."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, h, T, S)
    if is_causal:
        causal = causal_mask(q.size(-2), k.size(-2), q.device)
        mask = causal if mask is None else mask & causal
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = scores.softmax(dim=-1)
    return F.dropout(weights, dropout_p) @ v, weights


def causal_mask(t: int, s: int, device: torch.device | None = None) -> Tensor:
    """(T, S) True = attend, for T queries that are the last T of S positions."""
    return torch.ones(t, s, dtype=torch.bool, device=device).tril(diagonal=s - t)


class AttentionCache:
    """Keys and values (B, h, L, d_k) of one attention module, kept between decoding steps."""

    def __init__(self) -> None:
        self.k: Tensor | None = None
        self.v: Tensor | None = None

    def reorder(self, index: Tensor) -> None:
        if self.k is not None and self.v is not None:
            self.k, self.v = self.k.index_select(0, index), self.v.index_select(0, index)


class DecoderCache:
    """Incremental decoding state (fairseq's "incremental state") for `Transformer.decode`.

    Self-attention keys/values grow by one position per step. Cross-attention keys/values of the
    encoder output, and the source mask, are computed at the first step and reused afterwards.
    `reorder(index)` index_selects every stored tensor along the batch dimension: to follow the
    surviving beams, to repeat rows per beam, or to drop finished rows.
    """

    def __init__(self) -> None:
        self.layers: list[tuple[AttentionCache, AttentionCache]] = []  # (self, cross) per layer
        self.cross_mask: Tensor | None = None  # (B, 1, 1, S), True = attend
        self.memory_rows: Tensor | None = None  # (B,) the encoder row each row attends to
        self.length = 0  # target positions seen so far; a Python int so no device sync

    def reorder(self, index: Tensor) -> None:
        """Row i becomes old row index[i]; index (B_new,) may repeat or drop rows."""
        for self_attn, _ in self.layers:
            self_attn.reorder(index)
        if self.memory_rows is None:
            return
        rows = self.memory_rows.index_select(0, index)
        # Beams of one sentence read the same encoder row, so while beams only move within
        # their sentence the cross-attention keys/values already hold the right rows (fairseq
        # skips this copy by assumption; here it is checked).
        if torch.equal(rows, self.memory_rows):
            return
        for _, cross_attn in self.layers:
            cross_attn.reorder(index)
        self.cross_mask = self.cross_mask.index_select(0, index)
        self.memory_rows = rows


# Per thread, where recording modules put their attention weights (a list), or nothing: a
# server translating on several threads must not mix one request's weights into another's.
_recording = threading.local()


@contextmanager
def recording_attention() -> Iterator[list[Tensor]]:
    """Within the block, this thread's recording attention modules append their weights to the
    yielded list, in call order."""
    _recording.weights = weights = []
    try:
        yield weights
    finally:
        _recording.weights = None


class MultiHeadAttention(nn.Module):
    """MultiHead(Q, K, V) = Concat(head_1, ..., head_h) W^O,
    head_i = Attention(Q W^Q_i, K W^K_i, V W^V_i).

    W^K and W^V are stacked in one matrix because they always read the same input.
    A module made with `records=True` (the decoder's cross-attention) hands its weights
    (B, h, T, S) to `recording_attention` when this thread asked for them (computed by
    `reference_attention`, so slower; for heatmaps only).
    """

    def __init__(
        self, d_model: int, n_heads: int, dropout: float = 0.0, records: bool = False
    ) -> None:
        super().__init__()
        self.n_heads, self.d_k, self.dropout = n_heads, d_model // n_heads, dropout
        self.w_q = nn.Linear(d_model, d_model)
        self.w_kv = nn.Linear(d_model, 2 * d_model)
        self.w_o = nn.Linear(d_model, d_model)
        self.records = records

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, s, _ = x.shape
        # (B, S, 2D) -> (B, S, 2, h, d_k) -> (2, B, h, S, d_k)
        kv = self.w_kv(x).view(b, s, 2, self.n_heads, self.d_k).permute(2, 0, 3, 1, 4)
        return kv[0], kv[1]  # (B, h, S, d_k) each

    def forward(
        self,
        x: Tensor,
        source: Tensor | None,
        mask: Tensor | None = None,
        *,
        is_causal: bool = False,
        cache: AttentionCache | None = None,
        static_kv: bool = False,
    ) -> Tensor:
        """x (B, T, D) queries attend to `source` (B, S, D); returns (B, T, D).

        With a cache: static_kv (cross-attention) computes K, V of `source` once and reuses them;
        otherwise (self-attention) the new K, V are appended to the cached ones.
        """
        b, t, d = x.shape
        q = self.w_q(x).view(b, t, self.n_heads, self.d_k).transpose(1, 2)  # (B, h, T, d_k)
        if cache is not None and static_kv and cache.k is not None:
            k, v = cache.k, cache.v
        else:
            k, v = self.project_kv(source)
            if cache is not None:
                if static_kv:  # read at every step: lay them out once for the kernel
                    k, v = k.contiguous(), v.contiguous()
                elif cache.k is not None:
                    k, v = torch.cat([cache.k, k], dim=2), torch.cat([cache.v, v], dim=2)
                cache.k, cache.v = k, v
        p = self.dropout if self.training else 0.0
        sink = getattr(_recording, "weights", None) if self.records else None
        if sink is not None:
            out, weights = reference_attention(q, k, v, mask, is_causal=is_causal, dropout_p=p)
            sink.append(weights.detach())
        else:
            out = scaled_dot_product_attention(q, k, v, mask, is_causal=is_causal, dropout_p=p)
        return self.w_o(out.transpose(1, 2).reshape(b, t, d))  # (B, h, T, d_k) -> (B, T, D)
