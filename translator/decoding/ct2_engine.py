"""The `ctranslate2` engine: our tokenization, BPE and detokenization around CTranslate2's search.

    CTranslate2Translator.load(Path("runs/a"))    # = Translator.load(engine="ctranslate2")

It decodes the folder `translator export` writes (decoding/ct2_export.py says how the model is
converted, and where outputs may differ from the torch engine's by design).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from translator.config import DecodeConfig
from translator.data.vocab import PAD, SOS
from translator.decoding.pipeline import Pipeline
from translator.errors import UserError

EXPORT_DIR = "ct2"  # in the run dir, where `export` writes and the engine looks by default
INFO = "translator.json"


def ctranslate2_module():
    try:
        import ctranslate2
    except ImportError:
        raise UserError(
            "CTranslate2 is not installed: pip install ctranslate2 (or translator[ctranslate2])"
        ) from None
    return ctranslate2


def find_export(path: Path) -> Path:
    """The export folder of a run dir (RUN/ct2), or `path` itself when it is one."""
    from translator.run_dir import RunError

    path = Path(path)
    for folder in (path, path / EXPORT_DIR):
        if (folder / "model.bin").exists() and (folder / INFO).exists():
            return folder
    raise RunError(f"no CTranslate2 export in {path}: run `translator export --run {path}` first")


class CTranslate2Translator(Pipeline):
    """Our tokenization, BPE and detokenization around CTranslate2's search."""

    engine = "ctranslate2"

    def __init__(self, ct2_translator, bundle, info: dict, path: Path):
        super().__init__(None, bundle.cfg, bundle.src_vocab, bundle.tgt_vocab, bundle.subword)
        self.ct2, self.info, self.export_dir = ct2_translator, info, path
        self.has_shortlist = (path / "vmap.txt").exists()  # exports of runs with a shortlist
        self.run_dir, self.weights = Path(info["run"]), info["weights"]

    @classmethod
    def load(
        cls,
        run_dir: Path,
        weights: str | None = None,
        device: str = "cpu",
        threads: int | None = None,
    ) -> CTranslate2Translator:
        from translator.data.bundle import read_bundle
        from translator.run_dir import RunError

        ctranslate2 = ctranslate2_module()
        path = find_export(run_dir)
        info = json.loads((path / INFO).read_text(encoding="utf-8"))
        if weights is not None and weights != info["weights"]:
            raise RunError(
                f"{path} was exported from {info['weights']}, not {weights}: "
                f"run `translator export --weights {weights}` to decode those"
            )
        bundle = read_bundle(path)
        # Batches run in parallel, one thread each: a small model's matrices are too small to
        # share out (2 threads on one batch ran greedy search at half the speed of 1).
        workers = threads or bundle.cfg.decode.threads or len(os.sched_getaffinity(0))
        engine = ctranslate2.Translator(
            str(path), device=device, compute_type="default", inter_threads=workers,
            intra_threads=1,
        )  # fmt: skip
        loaded = cls(engine, bundle, info, path)
        loaded.options = loaded.options.override(threads=workers)  # said in reports
        return loaded

    @property
    def parallel_batches(self) -> int:
        """How many batches decode at once: the server hands this many to CTranslate2."""
        return self.ct2.num_translators

    def _chunk(self, opts: DecodeConfig) -> int:
        """Several batches per call, which CTranslate2 decodes in parallel (inter_threads)."""
        return opts.batch_size * self.ct2.num_translators * 4

    @property
    def quantization(self) -> str:
        return self.info["quantization"]

    def _decoding(self, opts: DecodeConfig, n_sentences: int):
        from contextlib import nullcontext

        return nullcontext()  # CTranslate2's threads are set when it loads

    def _run(
        self, batch: list[list[int]], opts: DecodeConfig, attention: bool = False, scored=False
    ):
        """Per source, its hypotheses best first: (output ids, score, attention or None).

        Ranked as our own search ranks them: each sentence stops at its own length limit with
        <eos> forced there, and beam hypotheses are scored by GNMT's penalty
        ((5 + |Y|) / 6)^alpha (CTranslate2's own is |Y|^alpha, which an alpha tuned for GNMT
        misjudges); `scored`: at beam size 1 too, as a beam of one (greedy search's outputs
        are not scored). CTranslate2 takes one length limit per call: a sentence whose beams reached
        its own limit below the batch's is decoded again at its own, and a beam the limit cut
        is scored with the <eos> ours forces there (over the whole vocabulary: CTranslate2
        scores without its vocabulary map, so with decode.shortlist such a beam scores a little
        lower than ours would give it)."""
        limits = [opts.output_limit(len(ids) + 1, self.cfg.model.max_positions) for ids in batch]
        if opts.beam_size == 1 and not scored:  # greedy: ours gives a prefix of a longer one
            results = self._translate(batch, opts, max(limits), attention)
            return [
                [(ids[:limit], 0.0, attn)]
                for (ids, _, attn), limit in zip((hyps[0] for hyps in results), limits, strict=True)
            ]
        results = self._translate(batch, opts, max(limits), attention)
        again: dict[int, list[int]] = {}  # limit -> sentences to decode again at it
        for i, (hyps, limit) in enumerate(zip(results, limits, strict=True)):
            if limit < max(limits) and any(len(ids) >= limit for ids, _, _ in hyps):
                again.setdefault(limit, []).append(i)
        for limit, rows in again.items():
            redone = self._translate([batch[i] for i in rows], opts, limit, attention)
            for i, hyps in zip(rows, redone, strict=True):
                results[i] = hyps
        return [
            self._ranked(ids, hyps, limit, opts.length_penalty)
            for ids, hyps, limit in zip(batch, results, limits, strict=True)
        ]

    def _translate(self, batch, opts: DecodeConfig, limit: int, attention: bool):
        """CTranslate2's hypotheses of each source, as (output ids, summed log-prob, attention):
        those that ended with <eos> (scored) before `limit` tokens, and the beams still alive
        at `limit` tokens, cut there without <eos> (the ones ours would force to end)."""
        itos = self.src_vocab.itos
        beam = opts.beam_size
        results = self.ct2.translate_batch(
            [[itos[i] for i in ids] for ids in batch],
            beam_size=beam,
            num_hypotheses=beam,  # every finished one: we rank them ourselves
            length_penalty=0,  # raw summed log-probs, <eos> included
            max_decoding_length=limit,
            max_input_length=0,  # inputs are already cut to fit the model
            max_batch_size=opts.batch_size,  # CTranslate2 splits the call into such batches
            suppress_sequences=[[PAD], [SOS]],  # never outputs, as in our search
            use_vmap=opts.shortlist and self.has_shortlist,
            return_scores=True,
            return_attention=attention,
        )
        stoi, unk = self.tgt_vocab.stoi, self.tgt_vocab.unk_id
        return [
            [
                ([stoi.get(t, unk) for t in hyp], score, result.attention[n] if attention else None)
                for n, (hyp, score) in enumerate(zip(result.hypotheses, result.scores, strict=True))
            ]
            for result in results
        ]

    def _ranked(self, src_ids: list[int], hyps: list, limit: int, alpha: float) -> list:
        """`hyps` ranked by GNMT-normalized score; one the limit cut is scored, as ours forces
        it, with <eos> after its first `limit` tokens."""
        from translator.decoding.search import length_penalty

        cut = [(ids[:limit], attn) for ids, _, attn in hyps if len(ids) >= limit]
        ended = [(ids, score, attn) for ids, score, attn in hyps if len(ids) < limit]
        if cut:
            itos_src, itos_tgt = self.src_vocab.itos, self.tgt_vocab.itos
            source = [itos_src[i] for i in src_ids]
            scored = self.ct2.score_batch(
                [source] * len(cut), [[itos_tgt[i] for i in ids] for ids, _ in cut]
            )
            for (ids, attn), result in zip(cut, scored, strict=True):
                ended.append((ids, sum(result.log_probs), attn))
        best: dict[tuple, tuple] = {}
        for ids, score, attn in ended:
            normalized = score / length_penalty(len(ids) + 1, alpha)
            if tuple(ids) not in best or normalized > best[tuple(ids)][1]:
                best[tuple(ids)] = (ids, normalized, attn)
        return sorted(best.values(), key=lambda h: -h[1])

    def _search(self, batch: list[list[int]], opts: DecodeConfig) -> list[list[int]]:
        return [hyps[0][0] for hyps in self._run(batch, opts)]

    def _search_nbest(self, batch, opts: DecodeConfig) -> list[list[tuple[list[int], float]]]:
        return [
            [(ids, score) for ids, score, _ in hyps[: opts.nbest]]
            for hyps in self._run(batch, opts, scored=True)  # a real score at beam 1 too
        ]

    def _search_attention(self, batch, opts: DecodeConfig):
        """CTranslate2's attention of its best output: the last layer's, heads averaged (as
        exported), without the source's <eos>."""
        import numpy as np

        runs = self._run(batch, opts, attention=True, scored=opts.nbest > 1)
        hyps = [
            [(ids, score if opts.nbest > 1 else None) for ids, score, _ in ranked[: opts.nbest]]
            for ranked in runs
        ]
        weights = [
            np.asarray(ranked[0][2], dtype=np.float32)[None, : len(ranked[0][0]) + 1]
            for ranked in runs
        ]
        return hyps, weights
