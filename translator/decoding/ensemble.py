"""Several trained models decoding as one: at each step, the average of their probabilities.

    model = Ensemble([run_a.model, run_b.model])   # same vocabularies, any sizes
    search(model, src, cfg.decode, sos_id=..., eos_id=...)   # as with one model

`Ensemble` offers the interface translator.decoding.search searches with (`encode`, `decode`,
`new_cache`, `pad_id`, `max_positions`), so greedy and beam search run on it unchanged. Each
member encodes the source and keeps its own key/value cache; the next-token distribution is
log(mean_i p_i), fairseq's ensemble rule. Its "logits" are therefore normalised log-probs, which
the search's log_softmax and argmax leave as they are.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from translator.model.attention import DecoderCache
from translator.model.transformer import Transformer


class EnsembleCache:
    """One DecoderCache per member, reordered together."""

    def __init__(self, caches: list[DecoderCache]) -> None:
        self.caches = caches

    def reorder(self, index: Tensor) -> None:
        for cache in self.caches:
            cache.reorder(index)


class Ensemble(nn.Module):
    def __init__(self, models: Sequence[Transformer]) -> None:
        super().__init__()
        if not models:
            raise ValueError("an ensemble needs at least one model")
        first = models[0]

        def sizes(model: Transformer) -> tuple[int, int, int]:
            return model.pad_id, model.src_embed.lut.num_embeddings, model.generator.out_features

        if any(sizes(model) != sizes(first) for model in models[1:]):
            raise ValueError("ensemble members must share their vocabularies")
        self.members = nn.ModuleList(models)
        self.pad_id = first.pad_id
        self.max_positions = min(model.max_positions for model in models)
        # Members' encoder outputs travel side by side on the feature axis, so the search sees
        # one (B, S, sum of d_model) tensor and its batch-size bookkeeping works unchanged.
        self.widths = [model.d_model for model in models]

    def new_cache(self) -> EnsembleCache:
        return EnsembleCache([model.new_cache() for model in self.members])

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]:
        encoded = [model.encode(src) for model in self.members]
        return torch.cat([memory for memory, _ in encoded], dim=-1), encoded[0][1]

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor | None,
        src_pad_mask: Tensor | None,
        cache: EnsembleCache | None = None,
        vocab: Tensor | None = None,
    ) -> Tensor:
        """tgt_in (B, T) -> log(mean of the members' probabilities) (B, T, V); with `vocab`,
        over those target ids only, each member's normalized over them."""
        memories = [None] * len(self.members) if memory is None else memory.split(self.widths, -1)
        caches = [None] * len(self.members) if cache is None else cache.caches
        lprobs = torch.stack(
            [
                model.decode(tgt_in, mem, src_pad_mask, member_cache, vocab).float().log_softmax(-1)
                for model, mem, member_cache in zip(self.members, memories, caches, strict=True)
            ]
        )
        return lprobs.logsumexp(dim=0) - math.log(len(self.members))
