"""Text in, German out: tokenization, batching, search and detokenization around a model.

    translator = Translator.load("runs/multi30k-20261125-120000")   # or Translator.load() = latest
    translator.translate(["A dog runs.", "Two men play chess."], beam_size=5)
    translator.translate_nbest(["A dog runs."], nbest=3, length_penalty=1.0)
    Translator.load("runs/a", ensemble=["runs/b", "runs/c"])         # three models as one

Decoding options are the run's `decode` config section (`translator.options`, a DecodeConfig);
keyword arguments override any of its keys for one call. The model is loaded once; sentences are
sorted by length into batches (little padding) and put back in input order. Empty lines give
empty lines. Input longer than the model accepts is cut to fit, with a warning.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from translator.config import Config, DecodeConfig
from translator.data.subword import Subword
from translator.data.tokenization import Tokenizer, detokenize
from translator.data.vocab import Vocab
from translator.errors import InputError

log = logging.getLogger("translator")


ENGINES = ("torch", "ctranslate2")


class Translator:
    """The text pipeline around an engine's search. This class decodes with PyTorch; the
    CTranslate2 engine (translator.decoding.ct2_export) is a subclass that replaces the
    `_search*` methods."""

    engine = "torch"
    parallel_batches = 1  # batches that may decode at once (the server's decoding threads)

    def __init__(
        self, model, cfg: Config, src_vocab: Vocab, tgt_vocab: Vocab, subword: Subword | None = None
    ):
        self.model, self.cfg = model, cfg
        self.src_vocab, self.tgt_vocab = src_vocab, tgt_vocab
        self.tokenizer = Tokenizer(cfg.data.src_lang, cfg.data.lowercase)
        self.subword = subword
        self.options = cfg.decode  # the run's decoding options; each call may override them
        # Room for <eos>; an ensemble's shortest member. No model: an engine that holds its own.
        positions = cfg.model.max_positions if model is None else model.max_positions
        self.max_source_tokens = positions - 1
        # Where the model came from, when loaded from run dirs (`load`): said in reports.
        self.run_dir: Path | None = None
        self.weights: str | None = None
        self.ensemble: list[Path] = []

    @classmethod
    def load(
        cls,
        run_dir: Path | None = None,
        weights: str | None = None,
        device: str = "cpu",
        ensemble: Sequence[Path] = (),
        engine: str = "torch",
        threads: int | None = None,
    ) -> Translator:
        """A run's model; with `ensemble`, those runs' models decode beside it (the same
        `weights` file in each). `engine="ctranslate2"` decodes with the run's CTranslate2
        export instead (`translator export`); `threads` is then fixed at load."""
        from translator.run_dir import BEST, check_same_vocabularies, latest_run, load_run

        if engine not in ENGINES:
            raise InputError(f"unknown engine {engine!r}: choose {' or '.join(ENGINES)}")
        if engine == "ctranslate2":
            from translator.decoding.ct2_export import CTranslate2Translator

            if ensemble:
                raise InputError("the ctranslate2 engine decodes one model; drop --ensemble")
            return CTranslate2Translator.load(run_dir or latest_run(), weights, device, threads)
        run = load_run(run_dir or latest_run(), weights or BEST, device)
        model = run.model
        if ensemble:
            from translator.decoding.ensemble import Ensemble

            others = [load_run(Path(path), weights or BEST, device) for path in ensemble]
            for other in others:
                check_same_vocabularies(run, other)
            model = Ensemble([run.model, *(other.model for other in others)])
        translator = cls(model, run.cfg, run.src_vocab, run.tgt_vocab, run.subword)
        translator.run_dir, translator.weights = run.path, weights or BEST
        translator.ensemble = [Path(path) for path in ensemble]
        return translator

    def translate(self, texts: Sequence[str], progress: bool = False, **options) -> list[str]:
        """The best translation of each text. `options` override the run's decoding options
        (DecodeConfig: beam_size, length_penalty, max_len, batch_size, threads, ...)."""
        opts = self.options.override(**options)
        results = self._batched(texts, lambda ids: self._search(ids, opts), opts, progress)
        return ["" if ids is None else self._detokenize(ids) for ids in results]

    def translate_nbest(
        self, texts: Sequence[str], progress: bool = False, **options
    ) -> list[list[tuple[str, float]]]:
        """The `nbest` best (translation, score) pairs of each text, best first; the beam is
        widened to `nbest` when it is narrower."""
        opts = self.options.override(**options)
        opts = opts.override(beam_size=max(opts.nbest, opts.beam_size))
        results = self._batched(texts, lambda ids: self._search_nbest(ids, opts), opts, progress)
        return [
            [] if hyps is None else [(self._detokenize(ids), score) for ids, score in hyps]
            for hyps in results
        ]

    def attention(self, text: str, **options):
        """(source tokens, output tokens, cross-attention (layers, T, S) averaged over heads).

        Token lists include the <eos> each side ends with. The weights come from one
        teacher-forced pass over the model's own translation.
        """
        import torch

        from translator.decoding.ensemble import Ensemble

        if isinstance(self.model, Ensemble):
            raise InputError("attention heatmaps show one model, not an ensemble")
        opts, ids = self._one_source(text, options)
        with self._decoding(opts, 1):
            (hyp,) = self._search([ids], opts)
            src = self._tensor([ids])
            tgt_in = torch.tensor([[self.tgt_vocab.sos_id, *hyp]], device=src.device)
            weights = self.model.cross_attention(src, tgt_in)[:, 0].mean(1)  # heads averaged
        src_tokens = [self.src_vocab.itos[i] for i in ids] + ["<eos>"]
        out_tokens = [self.tgt_vocab.itos[i] for i in hyp] + ["<eos>"]
        return src_tokens, out_tokens, weights.cpu().numpy()

    def _one_source(self, text: str, options: dict) -> tuple[DecodeConfig, list[int]]:
        """The options and source ids of the one text an attention heatmap shows."""
        opts = self.options.override(**options)
        (ids,) = self._encode([text])
        if not ids:
            raise InputError("nothing to plot: the input is empty")
        return opts, ids

    def _search(self, batch: list[list[int]], opts: DecodeConfig) -> list[list[int]]:
        """The best output ids of each source (ids without <eos>)."""
        from translator.decoding.search import search

        return search(self.model, self._tensor(batch), opts, **self._specials())

    def _search_nbest(
        self, batch: list[list[int]], opts: DecodeConfig
    ) -> list[list[tuple[list[int], float]]]:
        from translator.decoding.search import beam_search

        return beam_search(self.model, self._tensor(batch), opts, **self._specials())

    def _specials(self) -> dict:
        return dict(sos_id=self.tgt_vocab.sos_id, eos_id=self.tgt_vocab.eos_id)

    def _batched(self, texts: Sequence[str], decode, opts: DecodeConfig, progress: bool) -> list:
        """Run `decode` on length-sorted batches of source ids; results in input order, None
        for empty input."""
        ids = self._encode(texts)
        order = sorted((i for i in range(len(ids)) if ids[i]), key=lambda i: len(ids[i]))
        results: list = [None] * len(texts)
        size = self._chunk(opts)
        batches = [order[i : i + size] for i in range(0, len(order), size)]
        with self._decoding(opts, len(order)):
            for batch in _progress(batches, progress, len(order)):
                for i, result in zip(batch, decode([ids[i] for i in batch])):
                    results[i] = result
        return results

    def _chunk(self, opts: DecodeConfig) -> int:
        """Sentences handed to the search at once: one batch."""
        return opts.batch_size

    @contextmanager
    def _decoding(self, opts: DecodeConfig, n_sentences: int):
        """The model in eval mode, on the right number of threads, for one call."""
        was_training = self.model.training
        self.model.eval()
        try:
            with _threads(opts.threads, n_sentences):
                yield
        finally:
            self.model.train(was_training)

    def _tensor(self, sequences: list[list[int]]):
        import torch

        from translator.data.batching import pad_sequences

        src = pad_sequences(sequences, self.src_vocab.pad_id, suffix=self.src_vocab.eos_id)
        return torch.from_numpy(src).to(next(self.model.parameters()).device)

    def _detokenize(self, ids: list[int]) -> str:
        return detokenize(self.tgt_vocab.decode(ids))

    def source_pieces(self, texts: Sequence[str]) -> list[list[str]]:
        """The tokens (or subword pieces) the model reads for each text, before the ids."""
        tokens = self.tokenizer.tokenize(texts)
        return tokens if self.subword is None else self.subword.segment(tokens)

    def _encode(self, texts: Sequence[str]) -> list[list[int]]:
        limit = self.max_source_tokens
        ids = [self.src_vocab.encode(t) for t in self.source_pieces(texts)]
        too_long = sum(len(x) > limit for x in ids)
        if too_long:
            log.warning(
                "%d input(s) longer than %d tokens were cut to fit the model", too_long, limit
            )
        return [x[:limit] for x in ids]


SMALL_INPUT = 8  # sentences; fewer decode fastest on one thread (see _threads)


def default_threads(requested: int | None, n_sentences: int) -> int | None:
    """The threads to decode `n_sentences` with: `requested`, else one for a few sentences,
    else None (the process's setting)."""
    return requested or (1 if n_sentences <= SMALL_INPUT else None)


@contextmanager
def _threads(requested: int | None, n_sentences: int):
    """Run with `requested` CPU threads, or, when None, one thread for a few sentences: a
    sentence's matrices are too small to share out, and a second thread only waits on a busy
    core. Larger inputs keep the process's setting (all cores, or what training chose)."""
    import torch

    wanted = default_threads(requested, n_sentences)
    before = torch.get_num_threads()
    if wanted is None or wanted == before:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _progress(batches: list, enabled: bool, n_sentences: int):
    if not enabled:
        return batches
    from tqdm import tqdm

    bar = tqdm(
        total=n_sentences,
        unit="sent",
        desc="translate",
        leave=False,
        disable=not sys.stderr.isatty(),
    )  # no carriage-return frames in a log file

    def walk():
        for batch in batches:
            yield batch
            bar.update(len(batch))
        bar.close()

    return walk()
