"""Greedy and beam search over token ids, with the model's key/value cache.

    model.eval()  # the caller's job: search never changes the model's mode
    options = DecodeConfig(beam_size=5, length_penalty=0.6)   # cfg.decode, or any override
    best = search(model, src, options, sos_id=vocab.sos_id, eos_id=vocab.eos_id)  # greedy at k=1
    nbest = beam_search(model, src, options.override(nbest=3), sos_id=..., eos_id=...)

`model` is a Transformer, or a translator.decoding.ensemble.Ensemble: any `Searchable`.
`src` is a LongTensor (B, S) on the model's device, right-padded with `model.pad_id`.
Hypotheses are lists of token ids without SOS and EOS. The options are the one decoding-options
object (translator.config.DecodeConfig). A sentence's output is at most
min(max_len_a * src_len + max_len_b, max_positions - 1) tokens long (src_len counts non-pad
tokens), or min(max_len, max_positions - 1) when `max_len` is given. Beam scores are the sum of
log-probs divided by GNMT's lp(Y) = ((5 + |Y|) / 6)^alpha (alpha: options.length_penalty), |Y|
counting the EOS; the log-probs are over the tokens that may be output (<pad> and <sos> never
are). With `vocab` (a LongTensor of sorted target ids holding <eos>: a batch's shortlist), only
those tokens may be output, and the log-probs are normalized over them; ids and scores keep
their form. With `own` too (a (B, len(vocab)) bool tensor), sentence b may output only the
tokens `own[b]` marks, normalized over those: its output is then the same whatever other
sentences share its batch (and its shortlist). Every function runs under
torch.inference_mode(); dropout must already be off. Text (vocab, detokenization) lives elsewhere.
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from translator.config import DecodeConfig


class Searchable(Protocol):
    """What the searches need from a model: translator.model.transformer.Transformer and
    translator.decoding.ensemble.Ensemble both offer it."""

    pad_id: int
    max_positions: int

    def encode(self, src: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, tgt_in: Tensor, memory, src_pad_mask, cache=None, vocab=None) -> Tensor: ...

    def new_cache(self): ...


NO_SCORE = float("-inf")  # of the empty output given when no hypothesis could be scored
# Bump when the searches' outputs change for the same model and options, so that outputs
# recorded by an older search are not reused (evaluations.key_of). 2: one shortlist per sentence
OUTPUTS_VERSION = 2


def length_penalty(length: int, alpha: float) -> float:
    """GNMT length penalty ((5 + |Y|) / 6)^alpha (Wu et al., 2016)."""
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(model: Searchable, src_pad_mask: Tensor, options: DecodeConfig) -> list[int]:
    """Per-sentence limit on output tokens (EOS excluded), capped so positions fit the model."""
    src_lens = (~src_pad_mask).sum(dim=1).tolist()
    return [options.output_limit(n, model.max_positions) for n in src_lens]


def _check_beam(beam_size: int, nbest: int) -> None:
    if beam_size < 1:
        raise ValueError(f"beam_size must be at least 1, got {beam_size}")
    if not 1 <= nbest <= beam_size:
        raise ValueError(f"nbest must be between 1 and beam_size={beam_size}, got {nbest}")


def _banned_ids(model: Searchable, sos_id: int, vocab: Tensor | None = None) -> list[int]:
    """Positions in the logits of <pad> and <sos>: never outputs; banning them keeps a weak
    model's hypotheses clean."""
    ids = sorted({model.pad_id, sos_id})
    if vocab is None:
        return ids
    return torch.isin(vocab, torch.tensor(ids, device=vocab.device)).nonzero().view(-1).tolist()


def _eos_position(eos_id: int, vocab: Tensor | None) -> int:
    if vocab is None:
        return eos_id
    found = (vocab == eos_id).nonzero().view(-1)
    if found.numel() != 1:
        raise ValueError("a shortlist must hold <eos>")
    return int(found)


def beam_step(lprobs: Tensor, scores: Tensor, beam_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """One beam expansion: the best 2k continuations of each sentence's live beams.

    lprobs (N, b, V) next-token log-probs of b live beams; scores (N, b) their summed log-probs.
    Returns (cand_scores, cand_beams, cand_tokens), each (N, min(2k, b*V)), best first.
    Taking 2k, not k, is fairseq's trick: each beam contributes at most one EOS, so at least k
    candidates are not EOS and the beam never runs dry when hypotheses finish.
    """
    n, b, v = lprobs.shape
    width = min(2 * beam_size, v)
    # The sentence's best 2k are among each beam's best 2k: pick those first, which is much
    # cheaper than adding the scores to, and ranking, all b*V continuations.
    top_lprobs, top_tokens = lprobs.topk(width, dim=-1)  # (N, b, 2k)
    total = (scores.unsqueeze(-1) + top_lprobs).view(n, b * width)
    cand_scores, flat = total.topk(min(2 * beam_size, b * width), dim=1)  # (N, 2k)
    cand_tokens = top_tokens.view(n, b * width).gather(1, flat)
    return cand_scores, flat // width, cand_tokens


def _greedy(
    model: Searchable,
    memory: Tensor,
    src_pad_mask: Tensor,
    max_lens: list[int],
    sos_id: int,
    eos_id: int,
    vocab: Tensor | None = None,
    own: Tensor | None = None,
) -> list[list[int]]:
    """Batched greedy decoding with the key/value cache; finished rows leave the batch."""
    batch, device = memory.size(0), memory.device
    banned = _banned_ids(model, sos_id, vocab)
    _eos_position(eos_id, vocab)
    # Unwritten slots stay EOS, so every row can be cut at its first EOS at the end.
    out = torch.full((batch, max(max_lens, default=0)), eos_id, dtype=torch.long, device=device)
    rows = torch.arange(batch, device=device)  # sentence of each live row
    limits = torch.tensor(max_lens, device=device)  # (N,) of live rows
    tok = torch.full((batch, 1), sos_id, dtype=torch.long, device=device)
    cache = model.new_cache()
    outside = None  # per live row: the tokens its sentence may not output (own)
    for t in range(out.size(1)):
        logits = model.decode(tok, memory, src_pad_mask, cache, vocab)[:, -1]  # (N, V)
        logits[:, banned] = float("-inf")
        if own is not None:
            if outside is None or outside.size(0) != logits.size(0):
                outside = ~own[rows]  # when the rows change (finished ones leave)
            logits.masked_fill_(outside, float("-inf"))
        nxt = logits.argmax(dim=-1)  # (N,)
        if vocab is not None:
            nxt = vocab[nxt]
        out[rows, t] = nxt
        done = (nxt == eos_id) | (limits <= t + 1)
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            cache.reorder(keep)
            rows, nxt, limits = rows[keep], nxt[keep], limits[keep]
        tok = nxt.unsqueeze(1)
    return [_cut(ids[:n], eos_id) for ids, n in zip(out.tolist(), max_lens, strict=True)]


def _cut(ids: list[int], eos_id: int) -> list[int]:
    return ids[: ids.index(eos_id)] if eos_id in ids else ids


@torch.inference_mode()
def greedy_search_uncached(
    model: Searchable, src: Tensor, options: DecodeConfig, *, sos_id: int, eos_id: int
) -> list[list[int]]:
    """Greedy decoding that re-feeds the whole prefix every step: the slow reference that
    the cached version must match (tests) and beat (benchmarks)."""
    memory, src_pad_mask = model.encode(src)
    max_lens = max_output_lengths(model, src_pad_mask, options)
    banned = _banned_ids(model, sos_id)
    prefix = torch.full((src.size(0), 1), sos_id, dtype=torch.long, device=src.device)
    for _ in range(max(max_lens, default=0)):
        logits = model.decode(prefix, memory, src_pad_mask)[:, -1]  # (B, V)
        logits[:, banned] = float("-inf")
        prefix = torch.cat([prefix, logits.argmax(dim=-1, keepdim=True)], dim=1)
    rows = zip(prefix.tolist(), max_lens, strict=True)
    return [_cut(ids[1 : 1 + n], eos_id) for ids, n in rows]


@torch.inference_mode()
def beam_search(
    model: Searchable,
    src: Tensor,
    options: DecodeConfig,
    *,
    sos_id: int,
    eos_id: int,
    vocab: Tensor | None = None,
    own: Tensor | None = None,
) -> list[list[tuple[list[int], float]]]:
    """Batched beam search; per sentence the `options.nbest` (ids, score) pairs, best first."""
    k, nbest = options.beam_size, options.nbest
    _check_beam(k, nbest)
    memory, src_pad_mask = model.encode(src)
    max_lens = max_output_lengths(model, src_pad_mask, options)
    alpha = options.length_penalty
    return _beam(model, memory, src_pad_mask, max_lens, k, sos_id, eos_id, alpha, nbest, vocab, own)


def _beam(
    model: Searchable,
    memory: Tensor,
    src_pad_mask: Tensor,
    max_lens: list[int],
    k: int,
    sos_id: int,
    eos_id: int,
    alpha: float,
    nbest: int,
    vocab: Tensor | None = None,
    own: Tensor | None = None,
) -> list[list[tuple[list[int], float]]]:
    batch, device = memory.size(0), memory.device
    banned = _banned_ids(model, sos_id, vocab)
    eos_at = _eos_position(eos_id, vocab)
    finished: list[list[tuple[list[int], float]]] = [[] for _ in range(batch)]
    active = torch.arange(batch, device=device)  # sentence of each live sentence slot
    limits = torch.tensor(max_lens, device=device)  # (N,)
    n_done = torch.zeros(batch, dtype=torch.long, device=device)  # finished hyps per sentence
    scores = torch.zeros(batch, 1, device=device)  # (N, b) summed log-probs of live beams
    tokens = torch.empty(batch, 0, dtype=torch.long, device=device)  # (N*b, t) without SOS
    tok = torch.full((batch, 1), sos_id, dtype=torch.long, device=device)
    cache = model.new_cache()
    b = 1  # the first step runs once per sentence; its top candidates then fill the k beams
    outside = None  # per row of the logits: the tokens its sentence may not output (own)
    for t in range(max(max_lens, default=0) + 1):
        n = active.size(0)
        logits = model.decode(tok, memory, src_pad_mask, cache, vocab)[:, -1]  # (N*b, V)
        logits = logits.float()
        logits[:, banned] = float("-inf")  # before the softmax, as CTranslate2 suppresses them
        if own is not None:  # each beam row to its sentence's own shortlist
            if outside is None or outside.size(0) != logits.size(0):
                outside = ~own[active].repeat_interleave(b, dim=0)  # when the rows change
            logits.masked_fill_(outside, float("-inf"))
        lprobs = logits.log_softmax(dim=-1)
        lprobs = lprobs.view(n, b, -1)  # (N, b, V)
        at_limit = limits == t  # these sentences may only end now
        if at_limit.any():
            not_eos = torch.ones(lprobs.size(-1), dtype=torch.bool, device=device)
            not_eos[eos_at] = False
            lprobs = lprobs.masked_fill(at_limit[:, None, None] & not_eos, float("-inf"))
        cand_scores, cand_beams, cand_tokens = beam_step(lprobs, scores, k)
        if vocab is not None:
            cand_tokens = vocab[cand_tokens]  # positions in the shortlist -> token ids

        # An EOS among the top k candidates finishes a hypothesis (fairseq): keep at most
        # k finished per sentence, best first.
        is_eos = cand_tokens == eos_id
        ends = is_eos[:, :k] & cand_scores[:, :k].isfinite()
        ends &= ends.cumsum(dim=1) <= (k - n_done).unsqueeze(1)
        if ends.any():
            sent, pos = ends.nonzero(as_tuple=True)
            prefixes = tokens[sent * b + cand_beams[sent, pos]].tolist()
            final = (cand_scores[sent, pos] / length_penalty(t + 1, alpha)).tolist()
            for s, ids, score in zip(active[sent].tolist(), prefixes, final, strict=True):
                finished[s].append((ids, score))
            n_done += ends.sum(dim=1)

        # The k best candidates that are not EOS live on.
        scores, pos = cand_scores.masked_fill(is_eos, float("-inf")).topk(k, dim=1)  # (N, k)
        index = torch.arange(n, device=device).unsqueeze(1) * b + cand_beams.gather(1, pos)
        nxt = cand_tokens.gather(1, pos)  # (N, k)
        done = (n_done >= k) | at_limit
        if done.any():
            keep = (~done).nonzero().squeeze(1)
            if keep.numel() == 0:
                break
            index, nxt, scores = index[keep], nxt[keep], scores[keep]
            active, limits, n_done = active[keep], limits[keep], n_done[keep]
        index = index.view(-1)  # (N*k,) rows of the cache each new beam continues
        cache.reorder(index)
        tokens = torch.cat([tokens.index_select(0, index), nxt.view(-1, 1)], dim=1)
        tok, b = nxt.view(-1, 1), k
    # A sentence whose every ending scored NaN/-inf (a broken model) gets an empty output.
    return [sorted(hyps, key=lambda h: -h[1])[:nbest] or [([], NO_SCORE)] for hyps in finished]


@torch.inference_mode()
def search(
    model: Searchable,
    src: Tensor,
    options: DecodeConfig,
    *,
    sos_id: int,
    eos_id: int,
    vocab: Tensor | None = None,
    own: Tensor | None = None,
) -> list[list[int]]:
    """Encode once, then greedy (beam_size 1) or beam search; the best ids per sentence."""
    k = options.beam_size
    _check_beam(k, 1)
    memory, src_pad_mask = model.encode(src)
    max_lens = max_output_lengths(model, src_pad_mask, options)
    if k == 1:
        return _greedy(model, memory, src_pad_mask, max_lens, sos_id, eos_id, vocab, own)
    alpha = options.length_penalty
    nbest = _beam(model, memory, src_pad_mask, max_lens, k, sos_id, eos_id, alpha, 1, vocab, own)
    return [hyps[0][0] for hyps in nbest]
