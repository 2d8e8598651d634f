"""The lexical shortlist: learned by `prepare` from the training pairs, kept with the run."""

import numpy as np
from conftest import tiny

from translator.data.corpus import prepare
from translator.data.shortlist import Shortlist, learn_shortlist
from translator.data.tokenization import JOINER

TRANSLATIONS = {"dog": "Hund", "cat": "Katze", "runs": "läuft", "sleeps": "schläft",
                "snow": "Schnee", "beach": "Strand", "street": "Straße",
                "park": "Park"}  # fmt: skip


def test_each_source_word_lists_its_translation_first(toy_data):
    corpus = prepare(tiny(toy_data))
    shortlist, src, tgt = corpus.shortlist, corpus.src_vocab, corpus.tgt_vocab
    for english, german in TRANSLATIONS.items():
        # first, or second after a word it always comes with ("the cat": "Die Katze")
        best = [tgt.itos[i] for i in shortlist.candidates[src.stoi[english]][:2]]
        assert german in best, english
    always = {tgt.itos[i] for i in shortlist.always}
    assert {"<unk>", "<eos>", JOINER + "."} <= always and "<pad>" not in always


def test_a_batch_may_output_its_words_candidates_and_the_frequent_tokens_only(toy_data):
    corpus = prepare(tiny(toy_data))
    shortlist, src, tgt = corpus.shortlist, corpus.src_vocab, corpus.tgt_vocab
    allowed = shortlist.targets([src.encode(["A", "dog", "runs", JOINER + "."])])
    assert list(allowed) == sorted(allowed)
    words = {tgt.itos[i] for i in allowed}
    assert {"Hund", "läuft", "<eos>"} <= words
    assert len(allowed) < len(tgt)  # a smaller output layer is the point


def test_the_same_pairs_give_the_same_shortlist_and_it_round_trips(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 12, 300)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    src = rng.integers(4, 50, offsets[-1]).astype(np.int32)
    tgt = ((src * 7) % 46 + 4).astype(np.int32)  # a one-to-one "translation" of each token
    first = learn_shortlist(src, offsets, tgt, offsets, 50, 50, (1, 3))
    second = learn_shortlist(src.copy(), offsets, tgt.copy(), offsets, 50, 50, (1, 3))
    first.to_file(tmp_path / "a.safetensors")
    second.to_file(tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
    loaded = Shortlist.from_file(tmp_path / "a.safetensors")
    assert (loaded.candidates == first.candidates).all() and (loaded.always == first.always).all()
    for token in np.unique(src):
        assert loaded.candidates[token][0] == (token * 7) % 46 + 4


def test_a_large_corpus_is_learned_from_a_sample(monkeypatch):
    import translator.data.shortlist as module

    monkeypatch.setattr(module, "MAX_TRIPLES", 2_000)
    rng = np.random.default_rng(1)
    offsets = np.arange(0, 10 * 1000 + 1, 10)
    src = rng.integers(4, 30, offsets[-1]).astype(np.int32)
    tgt = (src + 10).astype(np.int32)
    shortlist = learn_shortlist(src, offsets, tgt, offsets, 30, 40, (1, 3))
    assert all(shortlist.candidates[t][0] == t + 10 for t in range(4, 30))


def test_each_sentence_of_a_batch_keeps_its_own_candidates():
    """own_targets: the batch's union, and per sentence the candidates it has decoded alone."""
    candidates = np.array([[5, 7, -1], [6, -1, -1], [8, 9, 5]], dtype=np.int32)
    shortlist = Shortlist(candidates, always=np.array([1, 3], dtype=np.int32))
    batch = [[0, 1], [2], [1, 1]]
    union, own = shortlist.own_targets(batch)
    assert list(union) == list(shortlist.targets(batch)) == [1, 3, 5, 6, 7, 8, 9]
    for row, ids in enumerate(batch):
        assert list(union[own[row]]) == list(shortlist.targets([ids]))
    assert [list(union[row]) for row in own] == [[1, 3, 5, 6, 7], [1, 3, 5, 8, 9], [1, 3, 6]]
