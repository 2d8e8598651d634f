"""Vocabulary: token <-> id, specials at fixed ids, built from the training split only.

    vocab = build_vocab(train_token_lists, min_freq=2)
    ids = vocab.encode(["Ein", "Hund"])         # unknown tokens map to vocab.unk_id
    vocab.to_file(path); Vocab.from_file(path)  # JSON

Tokens are ordered by frequency, then alphabetically, so the same corpus always gives the same ids.
Every other module asks the vocab for the special ids instead of repeating them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from translator.files import atomic_write_text

PAD, UNK, SOS, EOS = "<pad>", "<unk>", "<sos>", "<eos>"
SPECIALS = (PAD, UNK, SOS, EOS)


class Vocab:
    pad_id, unk_id, sos_id, eos_id = range(len(SPECIALS))

    def __init__(self, tokens: Sequence[str]):
        """`tokens` is the whole id -> token list, starting with SPECIALS."""
        if tuple(tokens[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {', '.join(SPECIALS)}")
        if len(set(tokens)) != len(tokens):
            raise ValueError("a vocabulary must not list a token twice")
        self.itos = list(tokens)
        self.stoi = {token: i for i, token in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def __eq__(self, other) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos

    def encode(self, tokens: Iterable[str]) -> list[int]:
        unk = self.unk_id
        return [self.stoi.get(token, unk) for token in tokens]

    def encode_many(self, token_lists: Iterable[Sequence[str]]) -> list[list[int]]:
        stoi, unk = self.stoi, self.unk_id
        return [[stoi.get(token, unk) for token in tokens] for tokens in token_lists]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens for `ids`, stopping at <eos> and leaving out <pad> and <sos>."""
        tokens = []
        for i in ids:
            if i == self.eos_id:
                break
            if i not in (self.pad_id, self.sos_id):
                tokens.append(self.itos[i])
        return tokens

    def to_file(self, path: Path) -> None:
        atomic_write_text(path, json.dumps({"tokens": self.itos}, ensure_ascii=False))

    @classmethod
    def from_file(cls, path: Path) -> Vocab:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        return cls(data["tokens"])


def build_vocab(
    token_lists: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
) -> Vocab:
    counts = Counter(token for tokens in token_lists for token in tokens)
    for special in SPECIALS:
        counts.pop(special, None)
    ranked = sorted((t for t, n in counts.items() if n >= min_freq), key=lambda t: (-counts[t], t))
    if max_size is not None:
        ranked = ranked[:max_size]
    return Vocab(list(SPECIALS) + ranked)
