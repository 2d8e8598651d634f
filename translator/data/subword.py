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
tokenizers' trainer breaks ties between equally frequent pairs by symbol ids, and numbers the
joiner-marked (word-continuing) characters as it meets them in a hash map's order, which changes
from process to process (tokenizers issue #1794; four learnings of Multi30k gave four merge
lists). So `train` gives it every symbol up front, in code point order, as special tokens: the
trainer then numbers nothing by itself. Every character seen goes in both as a word's start and
as a continuation, so new text made of seen characters never becomes <unk>.
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
    def train(
        cls,
        token_lists: Iterable[Sequence[str]],
        vocab_size: int,
        words: Iterable[str] | None = None,
    ) -> Subword:
        """The BPE of `vocab_size` pieces (specials included) learned from `token_lists`; the
        same lists give the same BPE in any process. `words`: every distinct token of the lists
        (when not given, the lists are read twice, so they are kept in memory)."""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        if words is None:
            token_lists = list(token_lists)
            words = {token for tokens in token_lists for token in tokens}
        # Every character seen, both as a word's first symbol and as a continuing one, numbered
        # here in code point order (see above): a character seen in one position only (a
        # capital inside no word, say) is still no <unk> in the other, in new text.
        characters = sorted({c for word in words for c in word})
        alphabet = [*characters, *(JOINER + c for c in characters)]
        tokenizer = Tokenizer(models.BPE(unk_token=UNK, continuing_subword_prefix=JOINER))
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            min_frequency=2,
            special_tokens=[*SPECIALS, *alphabet],
            continuing_subword_prefix=JOINER,
            show_progress=False,
        )
        # Words are whole spaCy tokens: the BPE never merges across them. A sentence goes in as
        # one string split at spaces (tokens hold none: `normalize` collapsed all whitespace),
        # 1.5x faster than one Python string per token.
        tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer.train_from_iterator((" ".join(tokens) for tokens in token_lists), trainer)
        return cls(_without_added_pieces(tokenizer))

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


def _without_added_pieces(trained):
    """The trained BPE with only our SPECIALS as added tokens: the alphabet it was
    given as special tokens are plain pieces (an added token would be cut out of any word
    that holds it before the BPE segments it)."""
    import json

    from tokenizers import Tokenizer, models

    model = json.loads(trained.to_str())["model"]
    merges = [
        tuple(pair.split(" ")) if isinstance(pair, str) else tuple(pair) for pair in model["merges"]
    ]
    bpe = models.BPE(
        vocab=model["vocab"], merges=merges, unk_token=UNK, continuing_subword_prefix=JOINER
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.add_special_tokens(list(SPECIALS))
    return tokenizer
