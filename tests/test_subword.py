"""BPE on spaCy tokens: exact detokenization, joint vocabularies, saved with the run."""

import pytest
from conftest import CONFIGS, REAL_DATA, requires_real_data, toy_overrides, toy_pairs

from translator.config import ConfigError, load_config
from translator.corpus import prepare
from translator.data import read_parallel
from translator.subword import Subword
from translator.tokenization import JOINER, Tokenizer, detokenize
from translator.vocab import UNK


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
