"""Tests for translator.decoding.search: cache vs no cache, beam vs greedy, limits, a copy task."""

from dataclasses import replace

import pytest
import torch
from conftest import TINY

from translator.config import DecodeConfig
from translator.decoding.search import (
    beam_search,
    beam_step,
    greedy_search_uncached,
    length_penalty,
    search,
)
from translator.model.transformer import Transformer

PAD, UNK, SOS, EOS = 0, 1, 2, 3
VOCAB = 20


def random_model(**overrides) -> Transformer:
    """An untrained model whose hypotheses vary in length: with tied embeddings an untrained
    model keeps repeating its input token, and the EOS row is scaled up so that some, not all,
    hypotheses end before the length limit."""
    torch.manual_seed(0)
    cfg = replace(TINY, norm="pre", tie_target_embeddings=False, **overrides)
    model = Transformer(cfg, VOCAB, VOCAB, pad_id=PAD)
    with torch.no_grad():
        model.generator.weight[EOS] *= 1.5
    return model.eval()


def random_src(lengths: list[int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(4, VOCAB, (len(lengths), max(lengths)), generator=gen)
    for row, n in enumerate(lengths):
        src[row, n:] = PAD
    return src


LENGTHS = [9, 4, 7, 1, 12, 5, 8, 3]


def greedy_search(model, src, options: DecodeConfig, **specials) -> list[list[int]]:
    """Greedy search: `search` at beam size 1, whatever `options` say."""
    return search(model, src, replace(options, beam_size=1), **specials)


def hypothesis_score(model: Transformer, src_row: torch.Tensor, ids: list[int], alpha: float):
    """Sum of log p(y_t | y_<t, x) over ids + [EOS], divided by the GNMT length penalty."""
    tgt = torch.tensor([[SOS, *ids, EOS]])
    src_row = src_row[src_row != PAD].unsqueeze(0)
    with torch.no_grad():
        logits = model(src_row, tgt[:, :-1])[0]  # (T, V)
        logits[:, [PAD, SOS]] = float("-inf")  # never outputs: the search's softmax skips them
        lprobs = logits.log_softmax(-1)
    total = lprobs.gather(1, tgt[0, 1:].unsqueeze(1)).sum().item()
    return total / length_penalty(len(ids) + 1, alpha)


def test_cached_greedy_equals_uncached():
    model, src = random_model(), random_src(LENGTHS)
    cached = greedy_search(model, src, DecodeConfig(), sos_id=SOS, eos_id=EOS)
    uncached = greedy_search_uncached(model, src, DecodeConfig(), sos_id=SOS, eos_id=EOS)
    assert cached == uncached
    limits = [int(1.5 * n + 10) for n in LENGTHS]
    # Both ways of stopping are exercised: by EOS (rows leave the batch) and by the limit.
    assert any(len(h) < m for h, m in zip(cached, limits, strict=True))
    assert any(len(h) == m for h, m in zip(cached, limits, strict=True))
    assert all(SOS not in h and EOS not in h and PAD not in h for h in cached)


def test_beam_size_one_equals_greedy():
    model, src = random_model(), random_src(LENGTHS, seed=1)
    greedy = greedy_search(model, src, DecodeConfig(), sos_id=SOS, eos_id=EOS)
    beam = beam_search(model, src, DecodeConfig(beam_size=1), sos_id=SOS, eos_id=EOS)
    assert [nbest[0][0] for nbest in beam] == greedy
    assert search(model, src, DecodeConfig(beam_size=1), sos_id=SOS, eos_id=EOS) == greedy


def test_beam_scores_are_consistent_and_beat_greedy():
    alpha = 0.6
    model, src = random_model(), random_src(LENGTHS, seed=2)
    greedy = greedy_search(model, src, DecodeConfig(), sos_id=SOS, eos_id=EOS)
    beam = beam_search(
        model, src, DecodeConfig(beam_size=4, length_penalty=alpha), sos_id=SOS, eos_id=EOS
    )
    assert search(
        model, src, DecodeConfig(beam_size=4, length_penalty=alpha), sos_id=SOS, eos_id=EOS
    ) == [b[0][0] for b in beam]
    for row, ((best, score), *_) in enumerate(x for x in beam):
        # The reported score is what teacher forcing gives for the same hypothesis ...
        assert score == pytest.approx(hypothesis_score(model, src[row], best, alpha), abs=1e-4)
        # ... and no worse than the greedy hypothesis under the same scoring.
        assert score >= hypothesis_score(model, src[row], greedy[row], alpha) - 1e-4


def test_batched_beam_equals_one_sentence_at_a_time():
    model, src = random_model(), random_src(LENGTHS, seed=3)
    batched = beam_search(model, src, DecodeConfig(beam_size=3, nbest=3), sos_id=SOS, eos_id=EOS)
    for row, n in enumerate(LENGTHS):
        alone = beam_search(
            model,
            src[row : row + 1, :n],
            DecodeConfig(beam_size=3, nbest=3),
            sos_id=SOS,
            eos_id=EOS,
        )[0]
        assert [ids for ids, _ in alone] == [ids for ids, _ in batched[row]]
        assert [s for _, s in alone] == pytest.approx([s for _, s in batched[row]], abs=1e-5)


def test_output_length_limits():
    src = random_src(LENGTHS, seed=4)
    model = random_model()
    for decode in (greedy_search, greedy_search_uncached):
        assert all(
            len(h) <= 3 for h in decode(model, src, DecodeConfig(max_len=3), sos_id=SOS, eos_id=EOS)
        )
    hyps = beam_search(
        model, src, DecodeConfig(beam_size=3, max_len=3, nbest=3), sos_id=SOS, eos_id=EOS
    )
    assert all(len(ids) <= 3 for nbest in hyps for ids, _ in nbest)
    relative = greedy_search(
        model, src, DecodeConfig(max_len_a=0.5, max_len_b=1), sos_id=SOS, eos_id=EOS
    )
    assert all(len(h) <= int(0.5 * n + 1) for h, n in zip(relative, LENGTHS, strict=True))
    assert greedy_search(model, src, DecodeConfig(max_len=0), sos_id=SOS, eos_id=EOS) == [[]] * len(
        LENGTHS
    )
    # The default limit (1.5 * 12 + 10 = 28) is capped by the model's positions, not an error.
    short, src = random_model(max_positions=8), src[:, :8]
    assert (
        max(len(h) for h in greedy_search(short, src, DecodeConfig(), sos_id=SOS, eos_id=EOS)) <= 7
    )
    beams = beam_search(short, src, DecodeConfig(beam_size=2, max_len=100), sos_id=SOS, eos_id=EOS)
    assert max(len(nbest[0][0]) for nbest in beams) <= 7


def test_nbest_is_sorted_and_distinct():
    model, src = random_model(), random_src(LENGTHS, seed=5)
    for nbest in beam_search(
        model, src, DecodeConfig(beam_size=5, nbest=4), sos_id=SOS, eos_id=EOS
    ):
        assert len(nbest) == 4
        scores = [score for _, score in nbest]
        assert scores == sorted(scores, reverse=True)
        assert len({tuple(ids) for ids, _ in nbest}) == 4
    with pytest.raises(ValueError, match="nbest"):
        beam_search(model, src, DecodeConfig(beam_size=2, nbest=3), sos_id=SOS, eos_id=EOS)
    with pytest.raises(ValueError, match="beam_size"):
        search(model, src, DecodeConfig(beam_size=0), sos_id=SOS, eos_id=EOS)


def test_beam_step_keeps_enough_candidates_when_eos_is_best():
    k, vocab = 3, 10
    gen = torch.Generator().manual_seed(0)
    lprobs = torch.randn(2, k, vocab, generator=gen).log_softmax(-1) - 2.0
    lprobs[:, :, EOS] = -0.1  # every beam's best continuation is EOS, by a wide margin
    scores = torch.tensor([[-1.0, -1.1, -1.2], [-0.5, -0.6, -0.7]])
    cand_scores, beams, tokens = beam_step(lprobs, scores, k)
    assert cand_scores.shape == beams.shape == tokens.shape == (2, 2 * k)
    assert (tokens[:, :k] == EOS).all()  # EOS fills the top k ...
    assert ((tokens != EOS).sum(dim=1) >= k).all()  # ... yet k live candidates remain
    expected = scores.gather(1, beams) + lprobs[torch.arange(2)[:, None], beams, tokens]
    torch.testing.assert_close(cand_scores, expected)
    assert (cand_scores[:, :-1] >= cand_scores[:, 1:]).all()


def copy_batch(n: int, gen: torch.Generator, max_len: int = 6) -> tuple[torch.Tensor, ...]:
    """Random sequences of ids 4..15 (lengths 2..max_len); target = SOS + sequence + EOS."""
    lens = torch.randint(2, max_len + 1, (n,), generator=gen)
    seq = torch.randint(4, 16, (n, max_len), generator=gen)
    seq = seq.masked_fill(torch.arange(max_len) >= lens[:, None], PAD)
    tgt = torch.nn.functional.pad(seq, (1, 1), value=PAD)
    tgt[:, 0] = SOS
    tgt[torch.arange(n), lens + 1] = EOS
    return seq, tgt


def test_copy_task_is_learned_and_decoded_exactly():
    steps = 300
    torch.manual_seed(0)
    cfg = replace(TINY, max_positions=16)
    model = Transformer(cfg, 16, 16, pad_id=PAD)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3, betas=(0.9, 0.98))
    # Short warmup, then linear decay: enough to fit the task in a few seconds.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / 30) * (1 - step / steps)
    )
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        src, tgt = copy_batch(64, gen)
        logits = model(src, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD
        )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert loss.item() < 0.1

    model.eval()
    src, _ = copy_batch(40, torch.Generator().manual_seed(12345))
    expected = [row[row != PAD].tolist() for row in src]
    assert greedy_search(model, src, DecodeConfig(), sos_id=SOS, eos_id=EOS) == expected
    beams = beam_search(model, src, DecodeConfig(beam_size=4), sos_id=SOS, eos_id=EOS)
    assert [nbest[0][0] for nbest in beams] == expected


def test_decoding_never_changes_the_process_threads(monkeypatch):
    """torch's thread count is the process's: an engine sets it once, when it loads, and a
    decode never touches it (a server's decoding threads would race on it)."""
    from translator.config import Config
    from translator.data.vocab import SPECIALS, Vocab
    from translator.decoding.translator import Translator
    from translator.errors import InputError

    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(VOCAB - len(SPECIALS)))])
    translator = Translator(random_model(), Config(), vocab, vocab)
    changes = []
    monkeypatch.setattr(torch, "set_num_threads", changes.append)
    for n in (1, 20):  # a few sentences, and more
        translator.translate(["w1 w2 w3"] * n, beam_size=2)
    assert changes == []
    with pytest.raises(InputError, match="threads are set when the engine loads"):
        translator.translate(["w1"], threads=2)


def reference_beam(model, src_row, k: int, alpha: float, limit: int) -> list:
    """fairseq's beam search written plainly, one hypothesis at a time and without a cache:
    each step ranks the 2k best continuations of the live beams; an <eos> among the first k
    finishes a hypothesis while fewer than k have finished; the k best others live on."""
    src_row = src_row[src_row != PAD].unsqueeze(0)
    memory, mask = model.encode(src_row)
    live, finished = [([], 0.0)], []
    for t in range(limit + 1):
        candidates = []
        for beam, (ids, total) in enumerate(live):
            logits = model.decode(torch.tensor([[SOS, *ids]]), memory, mask)[0, -1]
            logits = logits.float()
            logits[[PAD, SOS]] = float("-inf")
            lprobs = logits.log_softmax(-1)
            if t == limit:  # the limit: only <eos> may follow
                lprobs[torch.arange(VOCAB) != EOS] = float("-inf")
            values, tokens = lprobs.topk(min(2 * k, VOCAB))
            candidates += [
                (total + v, beam, tok) for v, tok in zip(values.tolist(), tokens.tolist())
            ]
        candidates = sorted(candidates, key=lambda c: -c[0])[: 2 * k]
        for total, beam, tok in candidates[:k]:
            if tok == EOS and total > float("-inf") and len(finished) < k:
                finished.append((live[beam][0], total / length_penalty(t + 1, alpha)))
        if len(finished) >= k:
            break
        live = [(live[b][0] + [tok], s) for s, b, tok in candidates if tok != EOS][:k]
    return sorted(finished, key=lambda h: -h[1])


@torch.inference_mode()
def test_beam_search_equals_the_plain_reference_and_keeps_k_finished():
    """The batched, cached beam must make the very choices of the plain one, including the cap
    of k finished hypotheses per sentence (more would change which n-best are returned)."""
    k, alpha = 4, 1.5  # a strong length reward: extra finished hypotheses would win places
    model = random_model()
    with torch.no_grad():
        model.generator.weight[EOS] *= 1.3  # many hypotheses end together: the cap matters
    for seed in (0, 1, 2, 3):
        src = random_src(LENGTHS, seed=seed)
        batched = beam_search(
            model,
            src,
            DecodeConfig(beam_size=k, length_penalty=alpha, nbest=k),
            sos_id=SOS,
            eos_id=EOS,
        )
        for row, n in enumerate(LENGTHS):
            expected = reference_beam(model, src[row], k, alpha, limit=int(1.5 * n + 10))
            assert [ids for ids, _ in batched[row]] == [ids for ids, _ in expected], row


def test_a_model_that_scores_nothing_gets_empty_outputs_not_a_crash():
    """NaN weights (a diverged run) leave no hypothesis with a finite score: every sentence
    gets an empty output (score -inf), as greedy search gives its argmax."""
    model, src = random_model(), random_src(LENGTHS[:3])
    with torch.no_grad():
        model.generator.weight.fill_(float("nan"))
    options = DecodeConfig(beam_size=3, nbest=2)
    assert search(model, src, options, sos_id=SOS, eos_id=EOS) == [[], [], []]
    nbest = beam_search(model, src, options, sos_id=SOS, eos_id=EOS)
    assert nbest == [[([], float("-inf"))]] * 3


class MaskedOutputs(torch.nn.Module):
    """A model whose outputs outside `allowed` score -inf: what a shortlist must be equal to."""

    def __init__(self, model: Transformer, allowed: torch.Tensor) -> None:
        super().__init__()
        self.model, self.pad_id, self.max_positions = model, model.pad_id, model.max_positions
        self.outside = torch.ones(VOCAB, dtype=torch.bool)
        self.outside[allowed] = False
        self.encode, self.new_cache = model.encode, model.new_cache

    def decode(self, tgt_in, memory, src_pad_mask, cache=None, vocab=None):
        logits = self.model.decode(tgt_in, memory, src_pad_mask, cache)
        return logits.masked_fill(self.outside, float("-inf"))


@pytest.mark.parametrize("allowed", [[1, 3, 5, 8, 9, 13, 17], list(range(1, VOCAB))])
def test_a_shortlist_decodes_as_if_the_other_tokens_did_not_exist(allowed):
    """With a shortlist, searches see only its tokens: the same outputs and scores as a model
    whose other outputs score -inf (log-probs normalized over the shortlist), ids unchanged.
    A shortlist of every token (pad and sos aside) changes nothing."""
    model, src = random_model(), random_src(LENGTHS)
    vocab = torch.tensor(allowed)
    masked = MaskedOutputs(model, vocab)
    options = DecodeConfig(beam_size=3, nbest=3, length_penalty=1.0)
    specials = dict(sos_id=SOS, eos_id=EOS)
    for beam in (1, 3):
        opts = replace(options, beam_size=beam, nbest=1)
        short = search(model, src, opts, **specials, vocab=vocab)
        assert short == search(masked, src, opts, **specials)
        assert all(set(ids) <= set(allowed) for ids in short)
    short = beam_search(model, src, options, **specials, vocab=vocab)
    full = beam_search(masked, src, options, **specials)
    assert [[ids for ids, _ in hyps] for hyps in short] == [[ids for ids, _ in h] for h in full]
    for a, b in zip(short, full, strict=True):
        assert [score for _, score in a] == pytest.approx([score for _, score in b], abs=1e-5)
    if len(allowed) == VOCAB - 1:
        assert short == beam_search(model, src, options, **specials)


def test_each_sentence_keeps_to_its_own_shortlist_whatever_its_batch():
    """With `own`, a sentence decoded in a batch gets what it gets decoded alone with its own
    shortlist (outputs and scores): the batch's union of shortlists changes nothing."""
    model, src = random_model(), random_src(LENGTHS)
    own_ids = [sorted({EOS, *range(4 + i % 5, VOCAB, 2 + i % 3)}) for i in range(len(LENGTHS))]
    union = torch.tensor(sorted({t for ids in own_ids for t in ids}))
    own = torch.stack([torch.isin(union, torch.tensor(ids)) for ids in own_ids])
    specials = dict(sos_id=SOS, eos_id=EOS)
    options = DecodeConfig(beam_size=3, nbest=2, length_penalty=1.0)
    for beam in (1, 3):
        opts = replace(options, beam_size=beam, nbest=1)
        batched = search(model, src, opts, **specials, vocab=union, own=own)
        alone = [
            search(model, src[i : i + 1], opts, **specials, vocab=torch.tensor(ids))[0]
            for i, ids in enumerate(own_ids)
        ]
        assert batched == alone
        assert all(set(out) <= set(ids) for out, ids in zip(batched, own_ids, strict=True))
    batched = beam_search(model, src, options, **specials, vocab=union, own=own)
    for i, ids in enumerate(own_ids):
        [alone] = beam_search(model, src[i : i + 1], options, **specials, vocab=torch.tensor(ids))
        assert [h for h, _ in batched[i]] == [h for h, _ in alone]
        assert [s for _, s in batched[i]] == pytest.approx([s for _, s in alone], abs=1e-5)
    # Without `own` the union lets some sentence output a token of another's shortlist.
    unioned = search(model, src, replace(options, nbest=1), **specials, vocab=union)
    assert unioned != batched_best(batched)


def batched_best(nbest):
    return [hyps[0][0] for hyps in nbest]
