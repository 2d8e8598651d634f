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

    def _run(self, batch: list[list[int]], opts: DecodeConfig, nbest: int, attention=False):
        itos = self.src_vocab.itos
        limits = [opts.output_limit(len(ids) + 1, self.cfg.model.max_positions) for ids in batch]
        results = self.ct2.translate_batch(
            [[itos[i] for i in ids] for ids in batch],
            beam_size=opts.beam_size,
            num_hypotheses=nbest,
            length_penalty=opts.length_penalty,
            max_decoding_length=max(limits) + 1,  # then cut to each sentence's own limit
            max_input_length=0,  # inputs are already cut to fit the model
            max_batch_size=opts.batch_size,  # CTranslate2 splits the call into such batches
            suppress_sequences=[[PAD], [SOS]],  # never outputs, as in our search
            return_scores=nbest > 1,
            return_attention=attention,
        )
        stoi, unk = self.tgt_vocab.stoi, self.tgt_vocab.unk_id
        return [
            (result, [[stoi.get(t, unk) for t in hyp][:limit] for hyp in result.hypotheses])
            for result, limit in zip(results, limits, strict=True)
        ]

    def _search(self, batch: list[list[int]], opts: DecodeConfig) -> list[list[int]]:
        return [hyps[0] for _, hyps in self._run(batch, opts, 1)]

    def _search_nbest(self, batch, opts: DecodeConfig) -> list[list[tuple[list[int], float]]]:
        return [
            list(zip(hyps, result.scores, strict=True))
            for result, hyps in self._run(batch, opts, opts.nbest)
        ]

    def attention(self, text: str, **options):
        """(source tokens, output tokens, attention (1, T, S)): CTranslate2 returns the last
        layer's cross-attention, heads averaged (as exported), without the source's <eos>."""
        import numpy as np

        opts, ids = self._one_source(text, options)
        ((result, (hyp, *_)),) = self._run([ids], opts, 1, attention=True)
        weights = np.asarray(result.attention[0], dtype=np.float32)[: len(hyp) + 1]
        src_tokens = [self.src_vocab.itos[i] for i in ids] + ["<eos>"]
        out_tokens = [self.tgt_vocab.itos[i] for i in hyp] + ["<eos>"]
        return src_tokens[: weights.shape[1]], out_tokens[: len(weights)], weights[None]
