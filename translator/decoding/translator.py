"""Text in, German out with PyTorch: the `Translator` (our own search over our own model).

    translator = Translator.load("runs/multi30k-20261125-120000")   # or Translator.load() = latest
    translator.translate(["A dog runs.", "Two men play chess."], beam_size=5)
    translator.translate_nbest(["A dog runs."], nbest=3, length_penalty=1.0)
    Translator.load("runs/a", ensemble=["runs/b", "runs/c"])         # three models as one
    Translator.load("runs/a", engine="ctranslate2")                  # its CTranslate2 export

The text pipeline (tokenization, batching, detokenization, options, heatmaps) is
decoding/pipeline.py's, shared with the CTranslate2 engine (decoding/ct2_engine.py); this module
adds the torch search (with its shortlist and attention) and `load`, which picks the engine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from translator.config import DecodeConfig
from translator.decoding.ct2_engine import CTranslate2Translator
from translator.decoding.pipeline import Pipeline
from translator.errors import InputError

ENGINES = ("torch", "ctranslate2")


class Translator(Pipeline):
    """The torch engine: our search over a Transformer (or an Ensemble of them)."""

    engine = "torch"

    def __init__(self, model, cfg, src_vocab, tgt_vocab, subword=None, shortlist=None):
        super().__init__(model, cfg, src_vocab, tgt_vocab, subword)
        self.shortlist = shortlist  # data.shortlist.Shortlist; None: every target token
        self.tgt_subword = None  # the target side's BPE where the run has two
        self._target_tokenizer = None  # made when first needed (log_likelihoods)
        self._reranker = None  # decode.rerank's models, loaded when first used

    @property
    def has_shortlist(self) -> bool:
        return self.shortlist is not None

    @classmethod
    def load(
        cls,
        run_dir: Path | None = None,
        weights: str | None = None,
        device: str = "cpu",
        ensemble: Sequence[Path] = (),
        engine: str = "torch",
        threads: int | None = None,
    ) -> Pipeline:
        """A run's model; with `ensemble`, those runs' models decode beside it (the same
        `weights` file in each). `engine="ctranslate2"` decodes with the run's CTranslate2
        export instead (`translator export`).

        `threads` (else the run's decode.threads, else untouched): the CPU threads decoding
        uses, set here, once. torch's thread pool belongs to the process, so for the torch
        engine this is the process's setting; decoding never changes it."""
        from translator.data.bundle import check_same_vocabularies
        from translator.model.weights import load_run
        from translator.run_dir import BEST, latest_run

        if engine not in ENGINES:
            raise InputError(f"unknown engine {engine!r}: choose {' or '.join(ENGINES)}")
        if threads is not None and threads < 1:
            raise InputError(f"threads must be at least 1, got {threads}")
        if engine == "ctranslate2":
            if ensemble:
                raise InputError("the ctranslate2 engine decodes one model; drop --ensemble")
            return CTranslate2Translator.load(run_dir or latest_run(), weights, device, threads)
        run = load_run(run_dir or latest_run(), weights or BEST, device)
        threads = threads or run.cfg.decode.threads
        if threads:
            import torch

            torch.set_num_threads(threads)
        model = run.model
        if ensemble:
            from translator.decoding.ensemble import Ensemble

            others = [load_run(Path(path), weights or BEST, device) for path in ensemble]
            for other in others:
                check_same_vocabularies(run, other)
                if other.cfg.model.right_to_left != run.cfg.model.right_to_left:
                    raise InputError(
                        f"{other.path} and {run.path} generate in opposite directions "
                        "(model.right_to_left): they cannot decode as one ensemble"
                    )
            model = Ensemble([run.model, *(other.model for other in others)])
        translator = cls(model, run.cfg, run.src_vocab, run.tgt_vocab, run.subword, run.shortlist)
        translator.run_dir, translator.weights = run.path, weights or BEST
        translator.tgt_subword = run.tgt_subword
        if threads:  # said in reports (evaluate --json), never applied per call
            translator.options = translator.options.override(threads=threads)
        translator.ensemble = [Path(path) for path in ensemble]
        return translator

    def _search(self, batch: list[list[int]], opts: DecodeConfig) -> list[list[int]]:
        """The best output ids of each source (ids without <eos>)."""
        from translator.decoding.search import search

        vocab, own = self._shortlist(batch, opts)
        src = self._tensor(batch)
        return search(self.model, src, opts, **self._specials(), vocab=vocab, own=own)

    def _search_nbest(
        self, batch: list[list[int]], opts: DecodeConfig
    ) -> list[list[tuple[list[int], float]]]:
        from translator.decoding.search import beam_search

        vocab, own = self._shortlist(batch, opts)
        src = self._tensor(batch)
        return beam_search(self.model, src, opts, **self._specials(), vocab=vocab, own=own)

    def _search_attention(self, batch: list[list[int]], opts: DecodeConfig):
        """The search's outputs, then the cross-attention over the best ones in one batched
        teacher-forced pass (the weights the search computed for them: no second search)."""
        import torch

        from translator.data.batching import pad_sequences
        from translator.decoding.ensemble import Ensemble

        if isinstance(self.model, Ensemble):
            raise InputError("attention heatmaps show one model, not an ensemble")
        if opts.nbest > 1:
            hyps = self._search_nbest(batch, opts)
        else:
            hyps = [[(ids, None)] for ids in self._search(batch, opts)]
        best = [ranked[0][0] for ranked in hyps]
        src = self._tensor(batch)
        tgt = pad_sequences(best, self.tgt_vocab.pad_id, prefix=self.tgt_vocab.sos_id)
        tgt_in = torch.from_numpy(tgt).to(src.device)
        weights = self.model.cross_attention(src, tgt_in).mean(2).cpu().numpy()  # heads averaged
        return hyps, [
            weights[:, row, : len(out) + 1, : len(ids) + 1]
            for row, (ids, out) in enumerate(zip(batch, best, strict=True))
        ]

    def _translate_rerank(self, texts: Sequence[str], opts: DecodeConfig, progress: bool):
        """decode.rerank: the n-best rescored by the weights file's models (loaded once)."""
        from translator.decoding.rerank import Reranker, RerankWeights

        weights = RerankWeights.load(Path(opts.rerank))
        if self._reranker is None or self._reranker.setup != weights.setup:
            self._reranker = Reranker(self, weights.setup, Translator.load)
        return self._reranker.translate(texts, weights.weights, progress)

    def log_likelihoods(
        self, sources: Sequence[str], targets: Sequence[str], batch_size: int = 64
    ) -> tuple[list[float], list[int]]:
        """log p(target | source) of each pair, summed over the target's tokens and <eos>
        (teacher-forced, every token scored as the search scores it, without a shortlist or
        length penalty; an ensemble's mean probabilities; a right-to-left
        model reads the target from its end), and each target's length in tokens. The texts
        are tokenized as this run tokenizes them."""
        import torch

        from translator.data.batching import pad_sequences

        if len(sources) != len(targets):
            raise ValueError(f"{len(sources)} sources but {len(targets)} targets")
        src_ids = self._encode(sources)
        limit = self.model.max_positions - 1
        tgt_ids = [ids[:limit] for ids in self._encode_targets(targets)]
        if self.cfg.model.right_to_left:
            tgt_ids = [ids[::-1] for ids in tgt_ids]
        order = sorted(range(len(src_ids)), key=lambda i: (len(src_ids[i]), len(tgt_ids[i])))
        scores = [0.0] * len(src_ids)
        pad, eos = self.tgt_vocab.pad_id, self.tgt_vocab.eos_id
        device = next(self.model.parameters()).device
        with self._decoding(self.options, len(order)), torch.inference_mode():
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                src = self._tensor([src_ids[i] for i in rows])
                tgt = pad_sequences([tgt_ids[i] for i in rows], pad, self.tgt_vocab.sos_id, eos)
                tgt = torch.from_numpy(tgt).to(device)
                memory, src_pad_mask = self.model.encode(src)
                logits = self.model.decode(tgt[:, :-1], memory, src_pad_mask).float()
                logits[..., [pad, self.tgt_vocab.sos_id]] = -math.inf  # as the search does
                gold = tgt[:, 1:]
                lprobs = logits.log_softmax(-1).gather(-1, gold[..., None])[..., 0]
                totals = lprobs.masked_fill(gold == pad, 0.0).sum(-1).tolist()
                for i, total in zip(rows, totals, strict=True):
                    scores[i] = total
        return scores, [len(ids) + 1 for ids in tgt_ids]

    def _encode_targets(self, texts: Sequence[str]) -> list[list[int]]:
        """Target-language text as this run's target ids (its tokenizer and BPE)."""
        from translator.data.tokenization import Tokenizer

        if self._target_tokenizer is None:
            self._target_tokenizer = Tokenizer(self.cfg.data.tgt_lang, self.cfg.data.lowercase)
        tokens = self._target_tokenizer.tokenize(texts)
        bpe = self.tgt_subword or self.subword
        return [self.tgt_vocab.encode(t) for t in (tokens if bpe is None else bpe.segment(tokens))]

    def _specials(self) -> dict:
        return dict(sos_id=self.tgt_vocab.sos_id, eos_id=self.tgt_vocab.eos_id)

    def _shortlist(self, batch: list[list[int]], opts: DecodeConfig):
        """(the target ids this batch may output, which of them each sentence may output) for
        decode.shortlist, else (None, None): every token, for every sentence."""
        if not opts.shortlist or self.shortlist is None:
            return None, None
        import torch

        device = next(self.model.parameters()).device
        union, own = self.shortlist.own_targets(batch)
        union = torch.from_numpy(union).to(device, torch.long)
        if own.all():  # one sentence (or all alike): the mask would change nothing; skip its cost
            return union, None
        return union, torch.from_numpy(own).to(device)

    @contextmanager
    def _decoding(self, opts: DecodeConfig, n_sentences: int):
        """The model in eval mode for one call (threads are the process's, set at load)."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _tensor(self, sequences: list[list[int]]):
        import torch

        from translator.data.batching import pad_sequences

        src = pad_sequences(sequences, self.src_vocab.pad_id, suffix=self.src_vocab.eos_id)
        return torch.from_numpy(src).to(next(self.model.parameters()).device)
