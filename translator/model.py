"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), one class per box.

    model = Transformer(cfg.model, len(src_vocab), len(tgt_vocab), pad_id=src_vocab.pad_id)
    logits = model(src, tgt_in)                          # (B, T, V_tgt), teacher forcing
    memory, src_pad_mask = model.encode(src)             # what translator.decode starts from
    cache = model.new_cache()
    logits = model.decode(tgt_step, memory, src_pad_mask, cache)  # one new token per row

Mask convention: every mask handed to attention is boolean with True = "may attend", the
convention of torch.nn.functional.scaled_dot_product_attention. The one exception is the
padding mask returned by `encode`, which is True = pad, because that is what callers test for.
Sequences are right-padded with `pad_id`; causality then also hides target padding from every
real target position, so the decoder's self-attention needs no padding mask.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from translator.vocab import SPECIALS

if TYPE_CHECKING:
    from translator.config import ModelConfig


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
        if d_model % n_heads:
            raise ValueError(f"d_model={d_model} is not divisible by n_heads={n_heads}")
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


def _check_length(length: int, max_len: int) -> None:
    if length > max_len:
        raise ValueError(
            f"sequence of {length} positions exceeds the model's maximum of {max_len} "
            f"(model.max_positions); shorten the input or train with a larger max_positions"
        )


def sinusoid_table(max_len: int, d_model: int) -> Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d_model)), PE(pos, 2i+1) = cos(same): (max_len, d)."""
    pos = torch.arange(max_len, dtype=torch.float).unsqueeze(1)  # (L, 1)
    inv_freq = torch.exp(torch.arange(0, d_model, 2).float() * (-math.log(10000.0) / d_model))
    table = torch.zeros(max_len, d_model)
    table[:, 0::2] = torch.sin(pos * inv_freq)
    table[:, 1::2] = torch.cos(pos * inv_freq)
    return table


class Positions(nn.Module):
    """A vector per position, added to x: the paper's sinusoids, or (`learned`) trained ones,
    its alternative, found to perform the same."""

    def __init__(self, d_model: int, max_len: int, learned: bool = False) -> None:
        super().__init__()
        self.max_len, self.learned = max_len, learned
        if learned:
            self.weight = nn.Parameter(torch.empty(max_len, d_model))
        else:  # not persistent: a function of the shape, so checkpoints need not carry it
            self.register_buffer("weight", sinusoid_table(max_len, d_model), persistent=False)

    def forward(self, x: Tensor, start: int = 0) -> Tensor:
        """x (B, T, D) holds positions start..start+T-1."""
        _check_length(start + x.size(1), self.max_len)
        return x + self.weight[start : start + x.size(1)].to(x.dtype)


class Embeddings(nn.Module):
    """Token embeddings multiplied by √d_model, so they are not dwarfed by the positions."""

    def __init__(self, vocab_size: int, d_model: int) -> None:
        super().__init__()
        self.lut = nn.Embedding(vocab_size, d_model)
        self.scale = math.sqrt(d_model)

    def forward(self, ids: Tensor) -> Tensor:
        return self.lut(ids) * self.scale


class Dropout(nn.Module):
    """nn.Dropout, with a mask drawn 4.5x faster on CPU.

    PyTorch's CPU dropout draws one Bernoulli sample per element and took a fifth of a training
    step of the small model (torch.profiler, scripts/bench_train.py). Here 16 random bits per
    element come from one int64 randint viewed as int16, compared with a threshold: p is rounded
    to a multiple of 1/65536 and the survivors are scaled by exactly the inverse keep rate, so the
    expectation is unchanged. Other devices keep the fused F.dropout.
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        dropped = round(self.p * 65536)
        bits = torch.randint(-(2**63), 2**63 - 1, ((x.numel() + 3) // 4,), dtype=torch.int64)
        r = bits.view(torch.int16)[: x.numel()].view(x.shape)  # uniform over [-32768, 32767]
        keep = (r >= dropped - 32768).to(x.dtype).mul_(65536 / (65536 - dropped))
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class FeedForward(nn.Module):
    """FFN(x) = max(0, x W_1 + b_1) W_2 + b_2, applied to each position alike."""

    def __init__(self, d_model: int, d_ff: int, dropout: float) -> None:
        super().__init__()
        self.w_1, self.w_2 = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)
        self.dropout = Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(F.relu(self.w_1(x))))


class SublayerConnection(nn.Module):
    """Residual + LayerNorm: post-norm LayerNorm(x + Sublayer(x)) as in the paper, or pre-norm
    x + Sublayer(LayerNorm(x)), more forgiving of learning rate and warmup, which needs a final
    LayerNorm after the stack."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm, self.dropout = nn.LayerNorm(d_model), Dropout(dropout)
        self.pre_norm = pre_norm

    def forward(self, x: Tensor, sublayer: Callable[[Tensor], Tensor]) -> Tensor:
        if self.pre_norm:
            return x + self.dropout(sublayer(self.norm(x)))
        return self.norm(x + self.dropout(sublayer(x)))


class EncoderLayer(nn.Module):
    """Self-attention, then the feed-forward network, each wrapped in a SublayerConnection."""

    def __init__(
        self, d_model, n_heads, d_ff, dropout, attention_dropout, activation_dropout, pre_norm
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout)
        self.ffn = FeedForward(d_model, d_ff, activation_dropout)
        self.sublayers = nn.ModuleList(
            [SublayerConnection(d_model, dropout, pre_norm) for _ in range(2)]
        )

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = self.sublayers[0](x, lambda y: self.self_attn(y, y, mask))
        return self.sublayers[1](x, self.ffn)


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention over the encoder output, then the FFN."""

    def __init__(
        self, d_model, n_heads, d_ff, dropout, attention_dropout, activation_dropout, pre_norm
    ) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, n_heads, attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, n_heads, attention_dropout, records=True)
        self.ffn = FeedForward(d_model, d_ff, activation_dropout)
        self.sublayers = nn.ModuleList(
            [SublayerConnection(d_model, dropout, pre_norm) for _ in range(3)]
        )

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        self_mask: Tensor | None,
        is_causal: bool,
        cross_mask: Tensor,
        cache: tuple[AttentionCache, AttentionCache] | None = None,
    ) -> Tensor:
        self_cache, cross_cache = cache if cache is not None else (None, None)
        x = self.sublayers[0](
            x, lambda y: self.self_attn(y, y, self_mask, is_causal=is_causal, cache=self_cache)
        )
        x = self.sublayers[1](
            x, lambda y: self.cross_attn(y, memory, cross_mask, cache=cross_cache, static_kv=True)
        )
        return self.sublayers[2](x, self.ffn)


def _kept(layers: nn.ModuleList, layerdrop: float, training: bool):
    """The layers that run: in training each is skipped with chance `layerdrop` (LayerDrop)."""
    if not (training and layerdrop):
        return list(enumerate(layers))
    keep = torch.rand(len(layers)) >= layerdrop
    return [(i, layer) for i, layer in enumerate(layers) if keep[i]]


class LayerStack(nn.Module):
    """N layers of `layer_class` (plus a final LayerNorm when pre-norm), each skipped in
    training with chance `layerdrop`."""

    layer_class: type[nn.Module]

    def __init__(
        self, n_layers: int, d_model: int, pre_norm: bool, layerdrop: float = 0.0, **layer_args
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [self.layer_class(d_model, pre_norm=pre_norm, **layer_args) for _ in range(n_layers)]
        )
        self.norm = nn.LayerNorm(d_model) if pre_norm else nn.Identity()
        self.layerdrop = layerdrop


class Encoder(LayerStack):
    """A stack of N EncoderLayers."""

    layer_class = EncoderLayer

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        for _, layer in _kept(self.layers, self.layerdrop, self.training):
            x = layer(x, mask)
        return self.norm(x)


class Decoder(LayerStack):
    """A stack of N DecoderLayers."""

    layer_class = DecoderLayer

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None,
        self_mask: Tensor | None,
        is_causal: bool,
        cross_mask: Tensor,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        if cache is not None and not cache.layers:
            cache.layers = [(AttentionCache(), AttentionCache()) for _ in self.layers]
        for i, layer in _kept(self.layers, self.layerdrop, self.training):
            layer_cache = cache.layers[i] if cache is not None else None
            x = layer(x, memory, self_mask, is_causal, cross_mask, layer_cache)
        return self.norm(x)


def _noisy(embed: Embeddings, ids: Tensor, drop: float, replace: float) -> Tensor:
    """The embeddings of `ids`, with input noise while training: each word (specials are kept)
    is replaced by a random word with chance `replace`, and its embedding zeroed with chance
    `drop` (Takase & Kiyono, 2021)."""
    if not (embed.training and (drop or replace)):
        return embed(ids)
    word = ids >= len(SPECIALS)
    if replace:
        swap = word & (torch.rand(ids.shape, device=ids.device) < replace)
        random = torch.randint_like(ids, len(SPECIALS), embed.lut.num_embeddings)
        ids = torch.where(swap, random, ids)
    x = embed(ids)
    if drop:
        zeroed = word & (torch.rand(ids.shape, device=ids.device) < drop)
        x = x.masked_fill(zeroed.unsqueeze(-1), 0.0)
    return x


class Transformer(nn.Module):
    """Encoder-decoder Transformer: `forward` for training, `encode`/`decode` for search."""

    def __init__(
        self, cfg: ModelConfig, src_vocab_size: int, tgt_vocab_size: int, pad_id: int
    ) -> None:
        super().__init__()
        if cfg.positions not in ("sinusoidal", "learned"):
            raise ValueError(f"positions must be 'sinusoidal' or 'learned', not {cfg.positions!r}")
        if cfg.norm not in ("post", "pre"):
            raise ValueError(f"norm must be 'post' or 'pre', not {cfg.norm!r}")
        if cfg.share_all_embeddings and src_vocab_size != tgt_vocab_size:
            raise ValueError(
                f"share_all_embeddings needs equal vocabulary sizes, got source "
                f"{src_vocab_size} and target {tgt_vocab_size}"
            )
        d_model, max_positions, dropout = cfg.d_model, cfg.max_positions, cfg.dropout
        self.pad_id, self.max_positions, self.d_model = pad_id, max_positions, d_model
        self.src_embed = Embeddings(src_vocab_size, d_model)
        self.tgt_embed = Embeddings(tgt_vocab_size, d_model)
        learned = cfg.positions == "learned"
        self.src_pos = Positions(d_model, max_positions, learned)
        self.tgt_pos = Positions(d_model, max_positions, learned)
        self.dropout = Dropout(dropout)
        layer_args = dict(
            d_model=d_model,
            pre_norm=cfg.norm == "pre",
            n_heads=cfg.n_heads,
            d_ff=cfg.d_ff,
            dropout=dropout,
            attention_dropout=cfg.attention_dropout,
            activation_dropout=dropout
            if cfg.activation_dropout is None
            else cfg.activation_dropout,
        )
        self.encoder = Encoder(cfg.encoder_layers, layerdrop=cfg.layerdrop, **layer_args)
        self.decoder = Decoder(cfg.decoder_layers, layerdrop=cfg.layerdrop, **layer_args)
        self.noise = cfg  # the word_dropout / word_replace rates, read in training only
        self.generator = nn.Linear(d_model, tgt_vocab_size, bias=False)  # logits = x Eᵀ
        self._reset_parameters()
        # Tie after init so that both names point at the one embedding-initialised matrix.
        if cfg.tie_target_embeddings or cfg.share_all_embeddings:
            self.generator.weight = self.tgt_embed.lut.weight
        if cfg.share_all_embeddings:
            self.src_embed.lut.weight = self.tgt_embed.lut.weight

    def _reset_parameters(self) -> None:
        # Xavier on matrices as in the annotated transformer; embeddings N(0, d^-1/2) so that,
        # once scaled by √d_model, token vectors have unit variance like the positions.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        for emb in (self.src_embed.lut.weight, self.tgt_embed.lut.weight):
            nn.init.normal_(emb, mean=0.0, std=self.d_model**-0.5)
        for pos in (self.src_pos, self.tgt_pos):
            if pos.learned:
                nn.init.normal_(pos.weight, mean=0.0, std=self.d_model**-0.5)

    def new_cache(self) -> DecoderCache:
        return DecoderCache()

    @torch.inference_mode()
    def cross_attention(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """The decoder's attention over the source in one teacher-forced pass:
        (layers, B, heads, T, S), each row a distribution over the source positions."""
        with recording_attention() as weights:
            self(src, tgt_in)
        return torch.stack([w.float() for w in weights])

    def forward(self, src: Tensor, tgt_in: Tensor) -> Tensor:
        """src (B, S), tgt_in (B, T) token ids -> logits (B, T, V_tgt)."""
        memory, src_pad_mask = self.encode(src)
        return self.decode(tgt_in, memory, src_pad_mask)

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        """src (B, S) -> (memory (B, S, D), src_pad_mask (B, S) with True = pad)."""
        src_pad_mask = src == self.pad_id
        attend = ~src_pad_mask[:, None, None, :]  # (B, 1, 1, S): same keys for every head/query
        n = self.noise
        x = self.dropout(self.src_pos(_noisy(self.src_embed, src, n.word_dropout, n.word_replace)))
        return self.encoder(x, attend), src_pad_mask

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor | None,
        src_pad_mask: Tensor | None,
        cache: DecoderCache | None = None,
    ) -> Tensor:
        """tgt_in (B, T) -> logits (B, T, V_tgt), attending to memory (B, S, D).

        With a cache, tgt_in holds only the new tokens, which continue at position
        `cache.length`; once the cache holds the cross-attention keys/values (after the first
        call) `memory` and `src_pad_mask` are not read and may be None.
        """
        start = cache.length if cache is not None else 0
        t = tgt_in.size(1)
        n = self.noise
        words = _noisy(self.tgt_embed, tgt_in, n.word_dropout_tgt, n.word_replace_tgt)
        x = self.dropout(self.tgt_pos(words, start))
        if cache is not None and cache.cross_mask is not None:
            cross_mask = cache.cross_mask
        else:
            cross_mask = ~src_pad_mask[:, None, None, :]  # (B, 1, 1, S)
            if cache is not None:
                cache.cross_mask = cross_mask
                cache.memory_rows = torch.arange(tgt_in.size(0), device=tgt_in.device)
        # Causal self-attention: the fused kernel's is_causal when queries and keys start
        # together; one new token may see every cached key; several new tokens after a
        # non-empty cache need the mask spelled out.
        self_mask, is_causal = None, False
        if start == 0:
            is_causal = t > 1
        elif t > 1:
            self_mask = causal_mask(t, start + t, tgt_in.device)
        x = self.decoder(x, memory, self_mask, is_causal, cross_mask, cache)
        if cache is not None:
            cache.length += t
        return self.generator(x)
