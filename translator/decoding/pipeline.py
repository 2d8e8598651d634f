"""The text pipeline every engine shares: tokenization, BPE, length-sorted batches, detokenization.

    class MyEngine(Pipeline):            # decoding/translator.py (torch), decoding/ct2_engine.py
        def _search(self, batch, opts): ...          # ids in, best output ids out
        def _search_nbest(self, batch, opts): ...    # ids in, [(ids, score), ...] out
        def _search_attention(self, batch, opts): ...  # n-best and the best's attention
        def _decoding(self, opts, n_sentences): ...  # a context: the engine ready for one call

Decoding options are the run's `decode` config section (`self.options`, a DecodeConfig); keyword
arguments override any of its keys for one call, except `threads`, which an engine takes when it
loads. Sentences are sorted by length into batches
(little padding) and put back in input order. Empty lines give empty lines. Input longer than the
model accepts is cut to fit, with a warning.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from translator.config import Config, DecodeConfig
from translator.data.subword import Subword
from translator.data.tokenization import Tokenizer, detokenize
from translator.data.vocab import Vocab
from translator.errors import InputError

log = logging.getLogger("translator")


class Pipeline:
    """Text in, text out around an engine's search (the `_search*` methods subclasses give)."""

    engine = "none"
    parallel_batches = 1  # batches that may decode at once (the server's decoding threads)
    has_shortlist = False  # whether decode.shortlist can restrict the outputs (the run has one)

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

    def translate(self, texts: Sequence[str], progress: bool = False, **options) -> list[str]:
        """The best translation of each text. `options` override the run's decoding options
        (DecodeConfig: beam_size, length_penalty, max_len, batch_size, ...; not threads, which
        the engine takes when it loads)."""
        opts = self._call_options(options)
        if opts.mbr:
            return self._translate_mbr(texts, opts, progress)
        if opts.rerank:
            return self._translate_rerank(texts, opts, progress)
        results = self._batched(texts, lambda ids: self._search(ids, opts), opts, progress)
        return ["" if ids is None else self._detokenize(ids) for ids in results]

    def _translate_mbr(self, texts: Sequence[str], opts: DecodeConfig, progress: bool) -> list:
        """decode.mbr: the beam's n-best (as many as the beam holds), then MBR's choice."""
        from translator.decoding.mbr import mbr_choice

        nbest = self._nbest(texts, opts.override(nbest=opts.beam_size), progress)
        return [mbr_choice(hyps, opts.mbr) if hyps else "" for hyps in nbest]

    def _translate_rerank(self, texts: Sequence[str], opts: DecodeConfig, progress: bool):
        """decode.rerank: the torch engine's alone (decoding/translator.py)."""
        raise InputError(f"the {self.engine} engine cannot rerank: use the torch engine")

    def translate_nbest(
        self, texts: Sequence[str], progress: bool = False, **options
    ) -> list[list[tuple[str, float]]]:
        """The `nbest` best (translation, score) pairs of each text, best first; the beam is
        widened to `nbest` when it is narrower."""
        opts = self._call_options(options)
        return self._nbest(
            texts, opts.override(beam_size=max(opts.nbest, opts.beam_size)), progress
        )

    def _nbest(self, texts: Sequence[str], opts: DecodeConfig, progress: bool) -> list:
        """The `opts.nbest` (translation, score) pairs of each text; [] for an empty one."""
        results = self._batched(texts, lambda ids: self._search_nbest(ids, opts), opts, progress)
        return [
            [] if hyps is None else [(self._detokenize(ids), score) for ids, score in hyps]
            for hyps in results
        ]

    def translate_with_attention(self, texts: Sequence[str], **options) -> list[tuple]:
        """Per text, `translate_nbest`'s (translation, score) pairs (score None at nbest 1)
        and the heatmap of the best one: (source tokens, output tokens, cross-attention
        (layers, T, S)), token lists ending with <eos>. The weights come from the search that
        made the translation (torch: one teacher-forced pass over its output ids; CTranslate2:
        its own, last layer). An empty text gives ([], None)."""
        opts = self._call_options(options)
        if opts.nbest > 1:
            opts = opts.override(beam_size=max(opts.nbest, opts.beam_size))

        def decode(batch):
            return list(zip(batch, *self._search_attention(batch, opts), strict=True))

        out = []
        for result in self._batched(texts, decode, opts, False):
            if result is None:
                out.append(([], None))
                continue
            src_ids, hyps, weights = result
            src_tokens = [self.src_vocab.itos[i] for i in src_ids] + ["<eos>"]
            out_ids = hyps[0][0]
            if self.cfg.model.right_to_left:  # rows in reading order, <eos> still last
                out_ids = out_ids[::-1]
                weights = np.concatenate([weights[:, -2::-1], weights[:, -1:]], axis=1)
            out_tokens = [self.tgt_vocab.itos[i] for i in out_ids] + ["<eos>"]
            heatmap = (src_tokens[: weights.shape[-1]], out_tokens[: weights.shape[-2]], weights)
            out.append(([(self._detokenize(ids), score) for ids, score in hyps], heatmap))
        return out

    def attention(self, text: str, **options):
        """(source tokens, output tokens, cross-attention (layers, T, S)) of `text`'s
        translation (`translate_with_attention`)."""
        ((_, heatmap),) = self.translate_with_attention([text], **options)
        if heatmap is None:
            raise InputError("nothing to plot: the input is empty")
        return heatmap

    def _call_options(self, options: dict) -> DecodeConfig:
        """The run's decoding options with one call's overrides. Threads are not among them: an
        engine's threads are set once, when it loads (a per-call change would be the whole
        process's, racing with any other thread that decodes)."""
        if options.get("threads") is not None:
            raise InputError(
                "threads are set when the engine loads (Translator.load(run, threads=N)), "
                "not per call"
            )
        return self.options.override(**options)

    def _search(self, batch: list[list[int]], opts: DecodeConfig) -> list[list[int]]:
        """The best output ids of each source (ids without <eos>)."""
        raise NotImplementedError

    def _search_nbest(
        self, batch: list[list[int]], opts: DecodeConfig
    ) -> list[list[tuple[list[int], float]]]:
        """The `opts.nbest` best (output ids, score) of each source, best first."""
        raise NotImplementedError

    def _search_attention(self, batch: list[list[int]], opts: DecodeConfig) -> tuple[list, list]:
        """Per source: its `opts.nbest` (output ids, score or None), best first, and the
        cross-attention (layers, T, S) numpy array of the best."""
        raise NotImplementedError

    def _decoding(self, opts: DecodeConfig, n_sentences: int):
        """A context in which the engine decodes one call's batches."""
        raise NotImplementedError

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

    def _detokenize(self, ids: list[int]) -> str:
        """Output ids as text (a right-to-left model's put back in reading order)."""
        if self.cfg.model.right_to_left:
            ids = ids[::-1]
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


SMALL_INPUT = 8  # sentences; fewer decode fastest on one thread


def default_threads(requested: int | None, n_sentences: int) -> int | None:
    """The threads to load an engine with for `n_sentences`: `requested`, else one for a few
    sentences (their matrices are too small to share out, and a second thread only waits on a
    busy core), else None (all cores)."""
    return requested or (1 if n_sentences <= SMALL_INPUT else None)


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
