import pytest
from conftest import REAL_DATA, requires_real_data

from translator.data.tokenization import JOINER, Tokenizer, detokenize


@pytest.fixture(scope="module")
def german():
    return Tokenizer("de")


@pytest.mark.parametrize(
    "text",
    [
        "Ein Hund läuft durch den Schnee.",
        'Ein Mann sagt: "Hallo!" und geht (schnell) weg...',
        "Zwei Männer, drei Frauen und 4,5 Kinder spielen Fußball im St.-Pauli-Stadion.",
        "Die Frau trägt ein T-Shirt – es ist 10:30 Uhr.",
        "😀 Emoji und 中文 bleiben erhalten?",
    ],
)
def test_detokenize_restores_the_text(german, text):
    (tokens,) = german.tokenize([text])
    assert detokenize(tokens) == text


def test_glued_tokens_carry_the_joiner(german):
    (tokens,) = german.tokenize(["Ein Hund, der läuft."])
    assert tokens == ["Ein", "Hund", JOINER + ",", "der", "läuft", JOINER + "."]


def test_whitespace_is_normalized_and_lowercasing_is_optional():
    (tokens,) = Tokenizer("en", lowercase=True).tokenize(["  A   Dog\truns. "])
    assert detokenize(tokens) == "a dog runs."
    (tokens,) = Tokenizer("en").tokenize(["A Dog"])
    assert tokens == ["A", "Dog"]


def test_empty_input_gives_no_tokens(german):
    assert german.tokenize(["", "   "]) == [[], []]


def test_unknown_language_is_a_clear_error():
    with pytest.raises(ValueError, match="no tokenizer for language 'xx-nope'"):
        Tokenizer("xx-nope")


@requires_real_data
def test_round_trip_rate_on_test2016_references(german):
    from pathlib import Path

    from translator.data.multi30k import read_lines

    refs = read_lines(Path(REAL_DATA) / "test_2016_flickr.de.gz")
    same = sum(detokenize(tokens) == ref for tokens, ref in zip(german.tokenize(refs), refs))
    assert same / len(refs) >= 0.995
