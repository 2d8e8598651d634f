"""spaCy word tokenization that detokenizes exactly.

    tok = Tokenizer("de")
    tok.tokenize(["Ein Hund, der läuft."])  # [["Ein", "Hund", "￭,", "der", "läuft", "￭."]]
    detokenize(["Ein", "Hund", "￭,", "der", "läuft", "￭."])  # "Ein Hund, der läuft."

`spacy.blank(lang)` gives the same rule-based tokenizer as spaCy's trained pipelines with no model
download. spaCy records whether each token is followed by a space; we keep that fact in the token
itself by prefixing JOINER to every token that is glued to the one before it (OpenNMT's "joiner"
convention). Most tokens follow a space, so only punctuation and the odd word carry the mark, and
the model learns where spaces go: the German it writes detokenizes to exactly the text it means,
which is what sacreBLEU scores.
"""

from __future__ import annotations

from collections.abc import Iterable

JOINER = "\uffed"  # "￭": this token is written with no space before it


def normalize(text: str, lowercase: bool = False) -> str:
    """One line of input as the model sees it: whitespace runs collapsed to one space, stripped."""
    text = " ".join(text.split())
    return text.lower() if lowercase else text


class Tokenizer:
    """Batch tokenizer for one language; returns joiner-marked token lists."""

    def __init__(self, lang: str, lowercase: bool = False):
        import spacy  # imported here so that `translator --help` stays instant

        try:
            self._tokenizer = spacy.blank(lang).tokenizer
        except ImportError as err:  # spaCy raises ImportError for an unknown language code
            raise ValueError(f"spaCy has no tokenizer for language {lang!r}") from err
        self.lang = lang
        self.lowercase = lowercase

    def tokenize(self, lines: Iterable[str], batch_size: int = 1000) -> list[list[str]]:
        texts = (normalize(line, self.lowercase) for line in lines)
        return [_mark(doc) for doc in self._tokenizer.pipe(texts, batch_size=batch_size)]


def _mark(doc) -> list[str]:
    tokens = []
    glued = False  # the first token has nothing to glue to
    for token in doc:
        tokens.append(JOINER + token.text if glued else token.text)
        glued = not token.whitespace_
    return tokens


def detokenize(tokens: Iterable[str]) -> str:
    """Inverse of `Tokenizer.tokenize` for normalized text."""
    parts = []
    for token in tokens:
        if token.startswith(JOINER):
            parts.append(token[len(JOINER) :])
        else:
            if parts:
                parts.append(" ")
            parts.append(token)
    return "".join(parts)
