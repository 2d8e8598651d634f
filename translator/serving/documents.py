"""Documents, not just sentences: split a text into lines and sentences, fit long sentences to
the model, and join the translations back with the text's own line breaks.

    doc = Document.split("A dog runs. It is fast.\nA cat sleeps.", sentencizer("en"))
    doc.sentences                  # ["A dog runs.", "It is fast.", "A cat sleeps."]
    doc.join(translations)         # "Ein Hund rennt. Er ist schnell.\nEine Katze schläft."

Sentences are found by spaCy's rule-based sentencizer (punctuation, no model download). A
sentence longer than the model accepts is split at punctuation inside it (, ; : and dashes), and
a part that is still too long at word boundaries: every word is translated, and the split is
reported as a warning, never done silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

# Where a too-long sentence is split first: after a clause mark, before the next word.
CLAUSE_END = re.compile(r"(?<=[,;:])\s+|\s+(?=[–—-]\s)")


@lru_cache(maxsize=4)
def sentencizer(lang: str):
    import spacy

    nlp = spacy.blank(lang)
    nlp.add_pipe("sentencizer")
    return nlp


@dataclass
class Document:
    sentences: list[str]  # what to translate, in order
    # Per line of the text, the range of `sentences` it holds (an empty line holds none).
    lines: list[range]
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def split(
        cls,
        text: str,
        nlp,
        count_pieces: Callable[[str], int] | None = None,
        limit: int | None = None,
    ) -> Document:
        """`count_pieces(sentence)` is how many tokens the model would read; with `limit`,
        longer sentences are split to fit."""
        sentences: list[str] = []
        lines: list[range] = []
        warnings: list[str] = []
        for line in text.split("\n"):
            start = len(sentences)
            for piece in _sentences(line.strip(), nlp):
                # A piece is at least one character: a short sentence needs no counting.
                if count_pieces is not None and limit is not None and len(piece) > limit:
                    parts = fit(piece, count_pieces, limit)
                    if len(parts) > 1:
                        warnings.append(
                            f"a sentence of {count_pieces(piece)} tokens (the model reads at "
                            f"most {limit}) was translated in {len(parts)} parts: "
                            f"{piece[:40]!r}..."
                        )
                    sentences.extend(parts)
                else:
                    sentences.append(piece)
            lines.append(range(start, len(sentences)))
        return cls(sentences, lines, warnings)

    def join(self, translations: Sequence[str]) -> str:
        """The translations put back in the text's lines, sentences separated by a space."""
        return "\n".join(" ".join(translations[i] for i in line) for line in self.lines)


def _sentences(line: str, nlp) -> list[str]:
    """The sentences of one line; spaCy's sentencizer runs only when a sentence-ending mark
    stands inside the line (most requests hold one sentence, and are answered sooner)."""
    if not line:
        return []
    if _punct_chars(nlp).isdisjoint(line.rstrip(TRAILING)):
        return [line]
    return [s.text.strip() for s in nlp(line).sents if s.text.strip()]


TRAILING = " \t.!?…\"'”’»)]"  # what may end a single sentence


def _punct_chars(nlp) -> frozenset[str]:
    return frozenset(nlp.get_pipe("sentencizer").punct_chars)


def fit(sentence: str, count_pieces: Callable[[str], int], limit: int) -> list[str]:
    """`sentence` as parts of at most `limit` tokens: split at clause marks, then at words."""
    if count_pieces(sentence) <= limit:
        return [sentence]
    parts: list[str] = []
    for clause in CLAUSE_END.split(sentence):
        parts.extend(_pack(clause.split(), count_pieces, limit))
    return _merge(parts, count_pieces, limit)


def _pack(words: list[str], count_pieces: Callable[[str], int], limit: int) -> list[str]:
    """Consecutive words grouped into parts that fit (a single over-long word stands alone
    and is cut by the translator, with its own warning)."""
    parts: list[str] = []
    current: list[str] = []
    for word in words:
        if current and count_pieces(" ".join([*current, word])) > limit:
            parts.append(" ".join(current))
            current = []
        current.append(word)
    if current:
        parts.append(" ".join(current))
    return parts


def _merge(parts: list[str], count_pieces: Callable[[str], int], limit: int) -> list[str]:
    """Neighbouring short parts joined again while they fit: fewer, more natural pieces."""
    merged: list[str] = []
    for part in parts:
        if merged and count_pieces(f"{merged[-1]} {part}") <= limit:
            merged[-1] = f"{merged[-1]} {part}"
        else:
            merged.append(part)
    return merged
