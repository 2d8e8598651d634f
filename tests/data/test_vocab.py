import pytest

from translator.data.vocab import SPECIALS, Vocab, build_vocab


def test_specials_have_fixed_ids_and_order_is_frequency_then_alphabet():
    vocab = build_vocab([["b", "a", "c"], ["a", "b"], ["a", "z"]], min_freq=1)
    assert vocab.itos[:4] == list(SPECIALS)
    assert (vocab.pad_id, vocab.unk_id, vocab.sos_id, vocab.eos_id) == (0, 1, 2, 3)
    assert vocab.itos[4:] == ["a", "b", "c", "z"]


def test_min_freq_and_max_size():
    corpus = [["a", "a", "a", "b", "b", "c"]]
    assert build_vocab(corpus, min_freq=2).itos[4:] == ["a", "b"]
    assert build_vocab(corpus, min_freq=1, max_size=1).itos[4:] == ["a"]


def test_unknown_tokens_map_to_unk_and_decode_stops_at_eos():
    vocab = build_vocab([["Hund", "läuft"]])
    ids = vocab.encode(["Hund", "Katze"])
    assert ids == [vocab.stoi["Hund"], vocab.unk_id]
    assert vocab.decode([vocab.sos_id, *ids, vocab.eos_id, vocab.stoi["läuft"]]) == [
        "Hund",
        "<unk>",
    ]


def test_json_round_trip(tmp_path):
    vocab = build_vocab([["Grüße", "aus", "Köln", "😀"]])
    vocab.to_file(tmp_path / "v.json")
    assert Vocab.from_file(tmp_path / "v.json") == vocab


def test_a_vocab_without_specials_first_is_rejected():
    with pytest.raises(ValueError, match="must start with"):
        Vocab(["a", "<pad>", "<unk>", "<sos>", "<eos>"])
