"""Subword units: byte-pair encoding learned on top of the spaCy tokens.

    bpe = Subword.train(train_token_lists, vocab_size=10000)
    bpe.segment([["Ein", "Fahrradfahrer", "￭."]])   # [["Ein", "Fahrrad", "￭fahrer", "￭."]]
    bpe.segment(token_lists, dropout=0.1)           # a sampled segmentation (BPE-dropout)
    bpe.to_file(path); Subword.from_file(path)      # JSON, in the cache and in the run dir

A piece that continues a word carries the same JOINER mark as a token glued to the previous one:
both mean "no space before this". So subword output needs no merge step of its own;
`tokenization.detokenize` turns pieces straight back into text, exactly. The BPE itself is the
`tokenizers` library's (Rust, fast); its JSON format holds data only.

Learning is reproducible: the same token lists give byte-identical BPE files in any process.
tokenizers' trainer breaks ties between equally frequent pairs by symbol ids, and it numbers the
joiner-marked (word-continuing) characters in hash-map order, which changes from process to
process (tokenizers issue #1794; four learnings of Multi30k gave four merge lists). So `train`
hands it no joiner marks: a word's later characters go in shifted to a private-use plane, where
they are ordinary characters the trainer numbers in code point order, and the learned pieces
are shifted back and marked afterwards, the same BPE written the usual way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from translator.data.tokenization import JOINER
from translator.data.vocab import SPECIALS, UNK
from translator.files import atomic_write_text
from translator.run_dir import SUBWORD


class Subword:
    FILE = SUBWORD  # its name in a prepared corpus and in a run dir

    CACHE_WORDS = 1_000_000  # words whose pieces `encode_ids` remembers (then starts anew)

    def __init__(self, tokenizer):
        self._tokenizer = tokenizer  # a tokenizers.Tokenizer with a BPE model
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def train(cls, token_lists: Iterable[Sequence[str]], vocab_size: int) -> Subword:
        """The BPE of `vocab_size` pieces (specials included) learned from `token_lists`; the
        same lists give the same BPE in any process (see the module's docstring)."""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(
            # Merges a few more: pieces that read the same once marked collapse into one.
            vocab_size=vocab_size + vocab_size // 20,
            min_frequency=2,
            special_tokens=list(SPECIALS),
            show_progress=False,
        )
        # Words are whole spaCy tokens: the BPE never merges across them. A sentence goes in as
        # one string split at spaces (tokens hold none: `normalize` collapsed all whitespace),
        # 1.5x faster than one Python string per token.
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        shifted = _Shifted()
        tokenizer.train_from_iterator(
            (" ".join([shifted[token] for token in tokens]) for tokens in token_lists), trainer
        )
        return cls.from_str(_marked_bpe(tokenizer.to_str(), vocab_size))

    def segment(
        self, token_lists: Sequence[Sequence[str]], dropout: float = 0.0
    ) -> list[list[str]]:
        """Pieces of each token list. With `dropout`, every merge is skipped with that chance
        (BPE-dropout, Provilkov et al. 2020): a segmentation sampled anew on every call, never
        coarser than the full one."""
        if not token_lists:
            return []
        tokenizer = self._tokenizer
        if dropout:  # on a copy: the deterministic BPE also segments validation and user input
            tokenizer = self.from_str(self.to_str())._tokenizer
            tokenizer.model.dropout = dropout
        encodings = tokenizer.encode_batch(
            [list(tokens) for tokens in token_lists], is_pretokenized=True, add_special_tokens=False
        )
        return [encoding.tokens for encoding in encodings]

    def encode_ids(self, token_lists: Sequence[Sequence[str]]) -> list[list[int]]:
        """The BPE's own piece ids (indices into `all_pieces`) of each token list, as `segment`
        gives them, 10x faster: each distinct word is segmented once, then remembered."""
        cache, model = self._cache, self._tokenizer.model
        if len(cache) > self.CACHE_WORDS:
            cache.clear()
        out = []
        for tokens in token_lists:
            ids: list[int] = []
            for token in tokens:
                pieces = cache.get(token)
                if pieces is None:
                    pieces = cache[token] = [piece.id for piece in model.tokenize(token)]
                ids += pieces
            out.append(ids)
        return out

    def all_pieces(self) -> list[str]:
        """Every piece, specials included, at its BPE id."""
        vocab = self._tokenizer.get_vocab()
        return sorted(vocab, key=vocab.get)

    def pieces(self) -> list[str]:
        """Every piece the BPE can output, specials left out, in id order."""
        vocab = self._tokenizer.get_vocab()
        return [piece for piece in sorted(vocab, key=vocab.get) if piece not in SPECIALS]

    def to_str(self) -> str:
        return self._tokenizer.to_str()

    @classmethod
    def from_str(cls, text: str) -> Subword:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(text))

    def to_file(self, path: Path) -> None:
        atomic_write_text(path, self.to_str())

    @classmethod
    def from_file(cls, path: Path) -> Subword:
        return cls.from_str(Path(path).read_text(encoding="utf-8"))


# A word's later characters learn as these code points, each its own character shifted by
# CONTINUING: the supplementary private-use planes hold the shift of every code point below
# U+20000 (all scripts in use; larger ones are refused).
CONTINUING = 0xF0000


class _Shifted(dict):
    """token -> the token with every character but the first shifted by CONTINUING (each
    distinct token shifted once)."""

    def __missing__(self, token: str) -> str:
        if any(ord(c) >= 0x20000 for c in token):
            raise ValueError(
                f"the BPE cannot learn from {token!r}: characters from U+20000 up are not supported"
            )
        shifted = self[token] = token[:1] + "".join(chr(ord(c) + CONTINUING) for c in token[1:])
        return shifted


def _unshifted(piece: str) -> str:
    """A learned piece as our BPE writes it: shifted characters back, marked with JOINER when
    the piece continues a word."""
    text = "".join(chr(ord(c) - CONTINUING) if ord(c) >= CONTINUING else c for c in piece)
    return JOINER + text if piece and ord(piece[0]) >= CONTINUING else text


def _marked_bpe(learned: str, vocab_size: int) -> str:
    """The tokenizer JSON of a BPE learned on shifted characters, as the joiner-marked BPE that
    segments spaCy tokens, cut after the merge that makes `vocab_size` pieces. A piece continuing
    a word and a joiner-glued token may read the same ("￭." of "dog." and of a glued "."): one
    piece then, as both mean "no space before", as tokenizers' own trainer makes them."""
    import json

    from tokenizers import Tokenizer, models

    model = json.loads(learned)["model"]
    pairs = [pair.split(" ") if isinstance(pair, str) else pair for pair in model["merges"]]
    learned_ids = model["vocab"]
    # The trainer numbers the specials, then the alphabet, then what each merge makes.
    first_made = min((learned_ids[left + right] for left, right in pairs), default=len(learned_ids))
    vocab: dict[str, int] = {}
    for piece, _ in sorted(learned_ids.items(), key=lambda item: item[1])[:first_made]:
        vocab.setdefault(_unshifted(piece), len(vocab))
    merges: dict[tuple[str, str], None] = {}
    for left, right in pairs:
        if len(vocab) >= vocab_size:  # where the trainer, given the size, would have stopped
            break
        merges[(_unshifted(left), _unshifted(right))] = None
        vocab.setdefault(_unshifted(left + right), len(vocab))
    bpe = models.BPE(
        vocab=vocab, merges=list(merges), unk_token=UNK, continuing_subword_prefix=JOINER
    )
    return Tokenizer(bpe).to_str()
