"""The Transformer of "Attention Is All You Need" (Vaswani et al., 2017), one class per box
(attention and its key/value caches are in attention.py).

    model = Transformer(cfg.model, len(src_vocab), len(tgt_vocab), pad_id=src_vocab.pad_id)
    logits = model(src, tgt_in)                          # (B, T, V_tgt), teacher forcing
    memory, src_pad_mask = model.encode(src)             # what decoding/search.py starts from
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
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from translator.data.vocab import SPECIALS
from translator.model.attention import (
    AttentionCache,
    DecoderCache,
    MultiHeadAttention,
    causal_mask,
    recording_attention,
)

if TYPE_CHECKING:
    from translator.config import ModelConfig


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
            memory, src_pad_mask = self.encode(src)
            # one output row, not the vocabulary's: only the attention is wanted
            self.decode(tgt_in, memory, src_pad_mask, vocab=src.new_zeros(1))
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
        vocab: Tensor | None = None,
    ) -> Tensor:
        """tgt_in (B, T) -> logits (B, T, V_tgt), attending to memory (B, S, D); with `vocab`
        (sorted target ids, a shortlist), the logits of those ids only (B, T, len(vocab)).

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
        if vocab is not None:  # only the shortlist's rows of the output layer
            return nn.functional.linear(x, self.generator.weight[vocab])
        return self.generator(x)
