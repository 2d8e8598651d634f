"""BPE on spaCy tokens: exact detokenization, joint vocabularies, saved with the run."""

import pytest
from conftest import CONFIGS, REAL_DATA, requires_real_data, toy_overrides, toy_pairs

from translator.config import ConfigError, load_config
from translator.data.corpus import prepare
from translator.data.multi30k import read_parallel
from translator.data.subword import Subword
from translator.data.tokenization import JOINER, Tokenizer, detokenize
from translator.data.vocab import UNK


def bpe_config(toy_data, *extra):
    return load_config(
        CONFIGS / "tiny.yaml",
        toy_overrides(toy_data, "vocab.kind=bpe", "vocab.joint=true", "vocab.bpe_size=300", *extra),
    )


def test_pieces_detokenize_to_the_exact_text():
    german = [de for _, de in toy_pairs(200, seed=1)] + ["Zwei Straßenmusikanten, müde."]
    tokens = Tokenizer("de").tokenize(german)
    bpe = Subword.train(tokens, vocab_size=300)
    pieces = bpe.segment(tokens)
    assert sum(map(len, pieces)) > sum(map(len, tokens))  # words were split
    assert [detokenize(p) for p in pieces] == german
    # A continuing piece carries the joiner: "no space before me", like glued punctuation.
    split_word = next(p for p in pieces if any(x.startswith(JOINER) and x[1:].isalpha() for x in p))
    assert split_word


def test_a_character_never_seen_in_training_becomes_unk_not_an_error():
    bpe = Subword.train([["ein", "Hund"], ["ein", "Hund"]], vocab_size=300)
    assert UNK in bpe.segment([["ein", "猫"]])[0]


def test_a_character_seen_in_one_position_is_no_unk_in_the_other():
    bpe = Subword.train([["Hund", "und"], ["Hund", "und"]], vocab_size=300)
    # "d" only ever ended a word, "H" only ever began one
    assert UNK not in bpe.segment([["dH", "Hd"]])[0]
    assert set(bpe.pieces()) >= {"H", "d", JOINER + "H", JOINER + "d"}


def test_the_saved_bpe_segments_the_same_way():
    tokens = Tokenizer("en").tokenize([en for en, _ in toy_pairs(100, seed=2)])
    bpe = Subword.train(tokens, vocab_size=300)
    assert Subword.from_str(bpe.to_str()).segment(tokens) == bpe.segment(tokens)


def test_joint_bpe_gives_one_vocabulary_and_exact_ids(toy_data):
    corpus = prepare(bpe_config(toy_data))
    assert corpus.src_vocab == corpus.tgt_vocab and corpus.subword is not None
    sources, targets = read_parallel("train", "en", "de", str(toy_data), False)
    pieces = corpus.subword.segment(Tokenizer("de").tokenize(targets[:5]))
    assert [corpus.tgt_vocab.encode(p) for p in pieces] == [
        corpus.splits["train"].tgt[i].tolist() for i in range(5)
    ]
    assert prepare(bpe_config(toy_data)).subword.to_str() == corpus.subword.to_str()  # cached


def test_separate_bpe_gives_two_vocabularies(toy_data):
    corpus = prepare(bpe_config(toy_data, "vocab.joint=false"))
    assert corpus.src_vocab != corpus.tgt_vocab


def test_shared_embeddings_need_a_joint_vocabulary(toy_data):
    with pytest.raises(ConfigError, match="needs vocab.joint: true"):
        bpe_config(toy_data, "vocab.joint=false", "model.share_all_embeddings=true")


@requires_real_data
def test_default_bpe_round_trips_every_test2016_reference():
    cfg = load_config(CONFIGS / "multi30k.yaml", [f"data.dir={REAL_DATA}"])
    corpus = prepare(cfg)
    _, refs = read_parallel("test2016", "en", "de", REAL_DATA)
    pieces = corpus.subword.segment(Tokenizer("de").tokenize(refs))
    assert [detokenize(p) for p in pieces] == [" ".join(r.split()) for r in refs]


def test_bpe_dropout_samples_finer_segmentations_that_detokenize_exactly():
    german = [de for _, de in toy_pairs(200, seed=1)]
    tokens = Tokenizer("de").tokenize(german)
    bpe = Subword.train(tokens, vocab_size=300)
    full = bpe.segment(tokens)
    first, second = bpe.segment(tokens, dropout=0.3), bpe.segment(tokens, dropout=0.3)
    assert first != second  # resampled on every call
    assert sum(map(len, first)) > sum(map(len, full))  # skipped merges leave more pieces
    assert [detokenize(p) for p in first] == german
    assert set(p for s in first for p in s) <= set(bpe.pieces())
    assert bpe.segment(tokens) == full  # the deterministic BPE is left untouched


def test_a_bpe_dropout_corpus_samples_train_without_unknown_pieces(toy_data):
    corpus = prepare(bpe_config(toy_data, "vocab.bpe_dropout=0.2"))
    plain = prepare(bpe_config(toy_data))
    assert corpus.path != plain.path  # another cache: its vocabulary holds every BPE piece
    assert set(corpus.subword.pieces()) <= set(corpus.src_vocab.stoi)
    for side in ("src", "tgt"):  # the same full segmentation
        assert (
            getattr(corpus.splits["train"], side).ids == getattr(plain.splits["train"], side).ids
        ).all()
    sampled = corpus.sample_train(0.2)
    train = corpus.splits["train"]
    assert len(sampled) == len(train) and len(sampled.tgt.ids) > len(train.tgt.ids)
    assert not (sampled.src.ids == corpus.src_vocab.unk_id).any()
    vocab = corpus.tgt_vocab
    assert [detokenize(vocab.decode(sampled.tgt[i])) for i in range(20)] == [
        detokenize(vocab.decode(train.tgt[i])) for i in range(20)
    ]
    with pytest.raises(ValueError, match="without vocab.bpe_dropout"):
        plain.sample_train(0.2)


def test_bpe_dropout_needs_a_bpe_vocabulary(toy_data):
    with pytest.raises(ConfigError, match="vocab.bpe_dropout needs vocab.kind: bpe"):
        load_config(CONFIGS / "tiny.yaml", toy_overrides(toy_data, "vocab.bpe_dropout=0.1"))


def test_bpe_dropout_with_separate_vocabularies_samples_each_side_with_its_own_bpe(toy_data):
    corpus = prepare(bpe_config(toy_data, "vocab.joint=false", "vocab.bpe_dropout=0.2"))
    assert corpus.subword is not corpus.tgt_subword
    assert set(corpus.tgt_subword.pieces()) <= set(corpus.tgt_vocab.stoi)
    sampled = corpus.sample_train(0.2)
    assert not (sampled.src.ids == corpus.src_vocab.unk_id).any()
    assert not (sampled.tgt.ids == corpus.tgt_vocab.unk_id).any()
