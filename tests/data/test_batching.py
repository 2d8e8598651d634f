import numpy as np
import pytest

from translator.data.batching import TokenBatchSampler, make_batch, padding_ratio, sampler_for
from translator.data.corpus import IdArray, ParallelIds


@pytest.fixture
def lengths():
    rng = np.random.default_rng(0)
    src = rng.integers(3, 40, size=2000)
    tgt = np.clip(src + rng.integers(-4, 5, size=2000), 2, 45)
    return src, tgt


def test_every_sentence_once_per_epoch_and_budget_respected(lengths):
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, max_tokens=500, seed=3)
    for epoch in range(3):
        batches = sampler.epoch(epoch)
        flat = [i for b in batches for i in b]
        assert sorted(flat) == list(range(2000))
        for b in batches:
            assert len(b) * max(src[b].max(), tgt[b].max()) <= 500


def test_max_sentences_caps_batches(lengths):
    sampler = TokenBatchSampler(*lengths, max_tokens=10_000, max_sentences=32)
    assert max(len(b) for b in sampler.epoch(0)) == 32


def as_lists(batches):
    return [b.tolist() for b in batches]


def test_same_seed_and_epoch_give_the_same_batches(lengths):
    a = TokenBatchSampler(*lengths, max_tokens=500, seed=7)
    b = TokenBatchSampler(*lengths, max_tokens=500, seed=7)
    assert as_lists(a.epoch(2)) == as_lists(b.epoch(2))
    assert as_lists(a.epoch(2)) != as_lists(a.epoch(3))
    other = TokenBatchSampler(*lengths, max_tokens=500, seed=8)
    assert as_lists(a.epoch(2)) != as_lists(other.epoch(2))


@pytest.mark.parametrize("world_size", [2, 3])
def test_shards_are_disjoint_cover_everything_and_have_equal_lengths(lengths, world_size):
    shards = [
        TokenBatchSampler(*lengths, max_tokens=500, seed=1, rank=r, world_size=world_size).epoch(4)
        for r in range(world_size)
    ]
    seen = [i for shard in shards for b in shard for i in b]
    assert sorted(seen) == list(range(2000))
    assert len({len(shard) for shard in shards}) == 1


def test_length_sorting_pads_far_less_than_random_batches(lengths):
    src, tgt = lengths
    sampler = TokenBatchSampler(src, tgt, max_tokens=2000, seed=0)
    batches = sampler.epoch(0)
    random_order = np.random.default_rng(0).permutation(2000)
    random_batches = np.array_split(random_order, len(batches))
    real = src.sum() + tgt.sum()
    random_padded = sum(len(b) * (src[b].max() + tgt[b].max()) for b in random_batches)
    assert padding_ratio(sampler) < 0.25 * (1 - real / random_padded)


def test_a_sentence_over_the_budget_is_a_clear_error():
    with pytest.raises(ValueError, match="exceeds the batch budget of 10"):
        TokenBatchSampler(np.array([3, 30]), np.array([3, 4]), max_tokens=10)


def test_make_batch_shifts_the_target_and_pads():
    pairs = ParallelIds(
        IdArray.from_lists([[10, 11, 12], [13]]), IdArray.from_lists([[20, 21], [22, 23, 24]])
    )
    batch = make_batch(pairs, [0, 1], pad_id=0, sos_id=2, eos_id=3)
    assert batch.src.tolist() == [[10, 11, 12, 3], [13, 3, 0, 0]]
    assert batch.tgt_in.tolist() == [[2, 20, 21, 0], [2, 22, 23, 24]]
    assert batch.tgt_out.tolist() == [[20, 21, 3, 0], [22, 23, 24, 3]]
    assert batch.n_tokens == 7 and batch.n_src_tokens == 6
    # model.right_to_left: the target from its last token, still framed by <sos> ... <eos>
    backwards = make_batch(pairs, [0, 1], pad_id=0, sos_id=2, eos_id=3, right_to_left=True)
    assert backwards.src.tolist() == batch.src.tolist()
    assert backwards.tgt_in.tolist() == [[2, 21, 20, 0], [2, 24, 23, 22]]
    assert backwards.tgt_out.tolist() == [[21, 20, 3, 0], [24, 23, 22, 3]]


def test_sampler_for_counts_the_specials(lengths):
    pairs = ParallelIds(IdArray.from_lists([[5] * 9]), IdArray.from_lists([[6] * 9]))
    sampler = sampler_for(pairs, max_tokens=10, max_sentences=None, seed=0, pool_batches=1)
    assert sampler.epoch(0) == [[0]]  # 9 tokens + <eos> (or <sos>) = 10 fits exactly
