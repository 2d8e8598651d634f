"""Tests for translator.model: shapes, masks hide pad and future, caches, options."""

from dataclasses import replace

import conftest
import pytest
import torch

from translator.model.attention import (
    recording_attention,
    reference_attention,
    scaled_dot_product_attention,
)
from translator.model.transformer import Transformer

PAD = 0
VOCAB = 20


TINY = replace(conftest.TINY, dropout=0.1, max_positions=32)  # dropout: train/eval differ


def make_model(seed: int = 0, src_vocab: int = VOCAB, **overrides) -> Transformer:
    torch.manual_seed(seed)
    model = Transformer(replace(TINY, **overrides), src_vocab, VOCAB, pad_id=PAD)
    return model.eval()


def random_batch(lengths: list[int], seed: int = 0) -> torch.Tensor:
    """Right-padded (B, max(lengths)) ids in 1..VOCAB-1 with the given non-pad lengths."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, VOCAB, (len(lengths), max(lengths)), generator=gen)
    for row, n in enumerate(lengths):
        ids[row, n:] = PAD
    return ids


def pad_right(ids: torch.Tensor, extra: int) -> torch.Tensor:
    return torch.nn.functional.pad(ids, (0, extra), value=PAD)


def test_forward_shapes():
    model = make_model()
    src, tgt = random_batch([7, 5, 3]), random_batch([4, 6, 2], seed=1)
    assert model(src, tgt).shape == (3, 6, VOCAB)
    memory, src_pad_mask = model.encode(src)
    assert memory.shape == (3, 7, 32)
    assert src_pad_mask.dtype == torch.bool
    assert src_pad_mask.tolist()[2] == [False] * 3 + [True] * 4


def test_sdpa_matches_reference_attention():
    torch.manual_seed(0)
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 8)
    mask = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    mask[1, ..., 4:] = False  # the second sequence's last 3 keys are padding
    expected, weights = reference_attention(q, k, v, mask)
    torch.testing.assert_close(scaled_dot_product_attention(q, k, v, mask), expected)
    assert torch.all(weights[1, ..., 4:] == 0)
    q = torch.randn(2, 4, 7, 8)  # causal needs square self-attention
    torch.testing.assert_close(
        scaled_dot_product_attention(q, k, v, is_causal=True),
        reference_attention(q, k, v, is_causal=True)[0],
    )


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_padding_does_not_change_real_positions(norm):
    model = make_model(norm=norm)
    src_lens, tgt_lens = [7, 4, 2], [5, 3, 6]
    src, tgt = random_batch(src_lens), random_batch(tgt_lens, seed=1)
    src_wide, tgt_wide = pad_right(src, 5), pad_right(tgt, 4)
    with torch.no_grad():
        narrow, wide = model(src, tgt), model(src_wide, tgt_wide)
    for row, n in enumerate(tgt_lens):
        torch.testing.assert_close(wide[row, :n], narrow[row, :n], atol=1e-5, rtol=1e-5)


def test_decoder_is_causal():
    model = make_model()
    src, tgt = random_batch([6, 6]), random_batch([8, 8], seed=1)
    changed = tgt.clone()
    changed[:, 5:] = (changed[:, 5:] % (VOCAB - 1)) + 1  # different non-pad ids after t = 4
    with torch.no_grad():
        before, after = model(src, tgt), model(src, changed)
    torch.testing.assert_close(after[:, :5], before[:, :5])
    assert not torch.allclose(after[:, 5:], before[:, 5:])


@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
def test_too_long_input_raises_a_clear_error(positions):
    model = make_model(positions=positions, max_positions=8)
    model(random_batch([8]), random_batch([8]))  # exactly the maximum is fine
    with pytest.raises(ValueError, match="9 positions exceeds the model's maximum of 8"):
        model(random_batch([9]), random_batch([3]))
    with pytest.raises(ValueError, match="maximum of 8"):
        model(random_batch([3]), random_batch([9]))


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_both_norm_placements_train(norm):
    model = make_model(norm=norm).train()
    has_final_norm = isinstance(model.encoder.norm, torch.nn.LayerNorm)
    assert has_final_norm == (norm == "pre")
    src, tgt = random_batch([5, 3]), random_batch([4, 4], seed=1)
    logits = model(src, tgt[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tgt[:, 1:], ignore_index=PAD)
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.decoder.parameters())


def test_embedding_tying_and_sharing():
    tied = make_model()
    assert tied.generator.weight is tied.tgt_embed.lut.weight
    assert tied.src_embed.lut.weight is not tied.tgt_embed.lut.weight
    untied = make_model(tie_target_embeddings=False)
    assert untied.generator.weight is not untied.tgt_embed.lut.weight
    shared = make_model(share_all_embeddings=True)
    assert shared.src_embed.lut.weight is shared.tgt_embed.lut.weight is shared.generator.weight
    n_shared = sum(p.numel() for p in shared.parameters())
    assert n_shared == sum(p.numel() for p in tied.parameters()) - VOCAB * 32
    with pytest.raises(ValueError, match="equal vocabulary sizes"):
        make_model(src_vocab=VOCAB + 1, share_all_embeddings=True)


def test_recorded_cross_attention_weights():
    model = make_model()
    src_lens = [6, 3]
    src, tgt = random_batch(src_lens), random_batch([5, 5], seed=1)
    with torch.no_grad(), recording_attention() as recorded_weights:
        recorded = model(src, tgt)
    with torch.no_grad():
        fused = model(src, tgt)
    torch.testing.assert_close(recorded, fused)  # recording changes nothing but speed
    assert len(recorded_weights) == len(model.decoder.layers)  # cross-attention only
    weights = model.cross_attention(src, tgt)[-1]
    torch.testing.assert_close(weights, recorded_weights[-1].float())
    assert weights.shape == (2, 4, 5, 6)  # (B, heads, T, S)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 4, 5))
    assert torch.all(weights[1, :, :, 3:] == 0)  # pad keys of the short source


def test_attention_recorded_on_one_thread_stays_there():
    """A server translates on several threads: one request's heatmap must not pick up the
    weights of a batch decoding beside it."""
    import threading

    model = make_model()
    src, tgt = random_batch([6, 3]), random_batch([5, 5], seed=1)
    other = threading.Thread(target=lambda: [model(src, tgt) for _ in range(20)])
    with torch.no_grad(), recording_attention() as weights:
        other.start()
        model(src, tgt)
        other.join()
    assert len(weights) == len(model.decoder.layers)


@pytest.mark.parametrize("norm", ["post", "pre"])
def test_cached_steps_equal_full_decode(norm):
    model = make_model(norm=norm)
    src, tgt = random_batch([7, 4, 5]), random_batch([6, 6, 6], seed=1)
    with torch.no_grad():
        memory, src_pad_mask = model.encode(src)
        full = model.decode(tgt, memory, src_pad_mask)
        cache = model.new_cache()
        steps = [model.decode(tgt[:, :1], memory, src_pad_mask, cache)]
        steps += [model.decode(tgt[:, t : t + 1], None, None, cache) for t in range(1, 4)]
        steps.append(model.decode(tgt[:, 4:], None, None, cache))  # several tokens at once
    assert cache.length == 6
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    "indices",
    [
        [[2, 0, 2]],  # drop row 1, repeat row 2 (beam search does both)
        [[1, 0, 2]],  # a permutation keeps the size but must still move cross-attention rows
        [[0, 0, 1, 1, 2, 2], [1, 0, 3, 2, 4, 4]],  # expand to beams, then move within sentences
    ],
)
def test_cache_reorder_follows_rows(indices):
    model = make_model()
    src, tgt = random_batch([7, 4, 5]), random_batch([5, 5, 5], seed=1)
    with torch.no_grad():
        memory, src_pad_mask = model.encode(src)
        cache = model.new_cache()
        model.decode(tgt[:, :2], memory, src_pad_mask, cache)
        rows = torch.arange(3)
        for t, index in enumerate(indices, start=2):
            cache.reorder(torch.tensor(index))
            rows = rows[index]
            model.decode(tgt[rows, t : t + 1], None, None, cache)
        last = model.decode(tgt[rows, t + 1 :], None, None, cache)
        full = model.decode(tgt[rows], memory[rows], src_pad_mask[rows])
    torch.testing.assert_close(last, full[:, t + 1 :], atol=1e-5, rtol=1e-5)


def test_cpu_dropout_drops_at_rate_p_and_keeps_the_expectation():
    from translator.model.transformer import Dropout

    torch.manual_seed(0)
    drop = Dropout(0.3).train()
    x = torch.ones(1000, 1000, requires_grad=True)
    y = drop(x)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - 0.3) < 0.002
    assert abs(y.mean().item() - 1.0) < 0.005
    y.sum().backward()  # the gradient flows through the kept units only, scaled alike
    assert torch.equal(x.grad, y.detach())
    assert torch.equal(drop.eval()(x), x)
    assert not torch.equal(Dropout(0.3).train()(x), Dropout(0.3).train()(x))  # a new mask each call


@pytest.mark.parametrize("activation_dropout, ffn_p", [(None, 0.3), (0.0, 0.0), (0.1, 0.1)])
def test_activation_dropout_sets_the_ffn_dropout_only(activation_dropout, ffn_p):
    # None keeps the older behaviour (the FFN drops at model.dropout); 0 is fairseq's default.
    model = make_model(dropout=0.3, activation_dropout=activation_dropout)
    for layer in [*model.encoder.layers, *model.decoder.layers]:
        assert layer.ffn.dropout.p == ffn_p
        assert all(sub.dropout.p == 0.3 for sub in layer.sublayers)
    if ffn_p == 0.0:  # no mask is drawn inside the FFN in training mode
        ffn = model.encoder.layers[0].ffn.train()
        x = torch.randn(3, 5, TINY.d_model)
        assert torch.equal(ffn(x), ffn(x))


NOISE = dict(word_dropout=0.3, word_dropout_tgt=0.3, word_replace=0.3, word_replace_tgt=0.3)


@pytest.mark.parametrize("noise", [NOISE, dict(layerdrop=0.5)], ids=["input noise", "layerdrop"])
def test_training_noise_acts_in_training_only(noise):
    """Input noise and LayerDrop change what a training step sees; decoding, in eval mode, is
    exactly the model without them (same weights)."""
    quiet = make_model(dropout=0.0)
    noisy = make_model(dropout=0.0, **noise)
    noisy.load_state_dict(quiet.state_dict())
    src, tgt = random_batch([6, 3], seed=2), random_batch([5, 5], seed=3)
    with torch.no_grad():
        torch.testing.assert_close(noisy.eval()(src, tgt), quiet.eval()(src, tgt))
        noisy.train()
        torch.manual_seed(0)
        first = noisy(src, tgt)
        torch.manual_seed(1)
        second = noisy(src, tgt)
    assert not torch.allclose(first, second)  # each step draws new noise
    assert not torch.allclose(first, quiet.eval()(src, tgt))


def test_input_noise_spares_padding_and_specials():
    model = make_model(dropout=0.0, word_replace=1.0, word_dropout=0.0).train()
    captured = []
    model.src_embed.register_forward_hook(lambda module, args, out: captured.append(args[0]))
    src = random_batch([6, 3], seed=4)
    src[0, 0] = 3  # an <eos> (a special) among the words
    model.encode(src)
    (seen,) = captured
    specials = src < 4
    assert torch.equal(seen[specials], src[specials])  # pad and specials kept
    assert (seen[~specials] != src[~specials]).float().mean() > 0.5  # words replaced
