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

import unicodedata
from collections.abc import Iterable

from translator.errors import InputError

JOINER = "\uffed"  # "￭": this token is written with no space before it
BOM = "\ufeff"


def clean(text: str) -> str:
    """Text as read, made comparable: Unicode NFC, no byte-order marks, no line-end characters."""
    text = text.replace(BOM, "").strip("\r\n")
    return text if unicodedata.is_normalized("NFC", text) else unicodedata.normalize("NFC", text)


def normalize(text: str, lowercase: bool = False) -> str:
    """One line of input as the model sees it: cleaned, whitespace runs collapsed to one space."""
    text = " ".join(clean(text).split())
    return text.lower() if lowercase else text


class Tokenizer:
    """Batch tokenizer for one language; returns joiner-marked token lists."""

    def __init__(self, lang: str, lowercase: bool = False):
        import spacy  # imported here so that `translator --help` stays instant

        check_language(lang)
        self._tokenizer = spacy.blank(lang).tokenizer
        self.lang = lang
        self.lowercase = lowercase

    def tokenize(self, lines: Iterable[str]) -> list[list[str]]:
        return self.tokenize_normalized(normalize(line, self.lowercase) for line in lines)

    def tokenize_normalized(self, texts: Iterable[str]) -> list[list[str]]:
        """For texts that went through `normalize` already."""
        tokenizer = self._tokenizer
        return [_mark(tokenizer(text)) for text in texts]


def check_language(lang: str) -> None:
    """Raise InputError (a ValueError) if spaCy has no tokenizer for `lang`."""
    import importlib.util
    from pathlib import Path

    spacy_spec = importlib.util.find_spec("spacy")  # finds, without importing (a second)
    if lang.isidentifier() and Path(spacy_spec.origin).parent.joinpath("lang", lang).is_dir():
        return
    import spacy  # a language added by a plugin is known to spaCy's registry only

    try:
        spacy.util.get_lang_class(lang)
    except ImportError:  # spaCy raises ImportError for an unknown language code
        raise InputError(f"spaCy has no tokenizer for language {lang!r}") from None


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
