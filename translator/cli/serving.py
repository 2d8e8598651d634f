"""`translator export` (CTranslate2) and `translator serve` (HTTP API and the page)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer

from translator.cli.app import (
    EngineOpt,
    RunOpt,
    ThreadsOpt,
    WeightsOpt,
    _check_at_least_one,
    _fail,
    _setup_logging,
    app,
    user_errors,
)
from translator.cli.decoding import _check_engine, _what_decodes


@app.command(
    epilog="Examples: `translator export --quantization int8`, "
    "`translator export --run runs/a --output runs/a/ct2 --no-check`, then "
    "`translator evaluate --bleu --engine ctranslate2`"
)
@user_errors
def export(
    run: RunOpt = None,
    weights: WeightsOpt = None,
    format_: Annotated[
        str, typer.Option("--format", help="Export format: `ctranslate2` (the only one).")
    ] = "ctranslate2",
    quantization: Annotated[
        str,
        typer.Option(
            help="CTranslate2 weight type: float32 (exact), int8 (fastest on CPU), "
            "int8_float32, int8_float16, int16, float16, bfloat16."
        ),
    ] = "float32",
    output: Annotated[
        Path | None, typer.Option(help="Folder to write [default: RUN/ct2, where --engine looks].")
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            help="Decode the validation split with both engines and print their BLEU and the "
            "share of identical outputs."
        ),
    ] = True,
) -> None:
    """Export a run's model to CTranslate2 (int8 CPU inference), with its tokenizer and BPE.

    The folder is self-contained: CTranslate2's model and vocabularies, the run's config,
    vocabularies and BPE, and translator.json (origin, pre- and post-processing). Then
    `translate`, `evaluate` and `serve` take `--engine ctranslate2`.
    """
    from translator.decoding.ct2_engine import EXPORT_DIR
    from translator.decoding.ct2_export import QUANTIZATIONS
    from translator.decoding.ct2_export import export as export_model
    from translator.model.weights import load_run
    from translator.run_dir import BEST, latest_run

    if format_ != "ctranslate2":
        raise _fail(f"--format must be ctranslate2, got {format_!r}", 2)
    if quantization not in QUANTIZATIONS:
        raise _fail(f"--quantization must be one of {', '.join(QUANTIZATIONS)}", 2)
    _setup_logging()
    loaded = load_run(run or latest_run(), weights or BEST)
    output = output or loaded.path / EXPORT_DIR
    started = time.perf_counter()
    export_model(loaded, weights or BEST, output, quantization)
    size = sum(f.stat().st_size for f in output.iterdir()) / 1e6
    typer.echo(
        f"exported {loaded.path} ({weights or BEST}) to {output}: CTranslate2 {quantization}, "
        f"{size:.1f} MB, {time.perf_counter() - started:.1f} s"
    )
    if check:
        _check_export(loaded, output)


def _check_export(run, exported: Path) -> None:
    """Both engines on the validation split: BLEU side by side and how many outputs agree.
    `run` is the loaded run (run_dir.Run) the export was made from."""
    from translator.data.sources import read_texts
    from translator.decoding.scoring import references_for, score
    from translator.decoding.translator import Translator

    engines = [
        Translator(run.model, run.cfg, run.src_vocab, run.tgt_vocab, run.subword, run.shortlist),
        Translator.load(exported, engine="ctranslate2"),
    ]
    sources, refs = read_texts(engines[0].cfg, "valid")
    refs = references_for(refs, engines[0].cfg.data.lowercase)
    opts = engines[0].options
    typer.echo(
        f"parity on the validation split ({len(sources):,} sentences, beam {opts.beam_size}, "
        f"alpha {opts.length_penalty:g}; --no-check skips this):"
    )
    outputs = []
    for translator in engines:
        started = time.perf_counter()
        if translator.engine == "torch":  # CTranslate2 set OpenMP's count, which torch shares
            import torch

            torch.set_num_threads(os.cpu_count() or 1)
        hyps = translator.translate(sources)
        seconds = time.perf_counter() - started
        bleu = score(hyps, refs, translator.cfg.data.tgt_lang, literature=False)["bleu"]
        typer.echo(
            f"  {translator.engine:<12} BLEU {bleu:6.2f}   {seconds:6.1f} s "
            f"({len(hyps) / seconds:,.0f} sentences/s)"
        )
        outputs.append(hyps)
    same = sum(a == b for a, b in zip(*outputs)) / max(len(sources), 1)
    typer.echo(f"  identical outputs: {same:.1%}")


@app.command(
    epilog="Examples: `translator serve`, `translator serve --run runs/a --port 9000 --engine "
    "ctranslate2`, then `curl -s localhost:8000/v1/translate -H 'content-type: "
    'application/json\' -d \'{"text": "A dog runs."}\'`'
)
@user_errors
def serve(
    run: RunOpt = None,
    weights: WeightsOpt = None,
    engine: EngineOpt = "torch",
    host: Annotated[
        str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    threads: ThreadsOpt = None,
    max_batch_tokens: Annotated[
        int,
        typer.Option(
            help="Source words decoded together at most: a free decoding thread takes every "
            "request queued, up to this many."
        ),
    ] = 2048,
    batch_wait_ms: Annotated[
        float,
        typer.Option(
            help="How long a request alone in the queue waits for company (never when others "
            "are queued). 0: decode it at once; requests that come meanwhile batch together "
            "for the next free decoding thread."
        ),
    ] = 0.0,
    max_sentences: Annotated[int, typer.Option(help="Sentences per request (413).")] = 100,
    max_chars: Annotated[int, typer.Option(help="Characters per sentence (422).")] = 1000,
    max_body_bytes: Annotated[int, typer.Option(help="Request body size (413).")] = 1_000_000,
    timeout: Annotated[float, typer.Option(help="Seconds per request (504).")] = 30.0,
    api_key: Annotated[
        str | None,
        typer.Option(
            help="Require this api_key on the LibreTranslate endpoints (403 without); by "
            "default a key is accepted and ignored. Also $TRANSLATOR_API_KEY.",
            envvar="TRANSLATOR_API_KEY",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Serve a run: an HTTP API, the LibreTranslate API, and a web page at /.

    POST /v1/translate, GET /v1/info, GET /health; POST /translate, /detect, GET /languages and
    /frontend/settings as LibreTranslate has them (JSON or form bodies), so its clients work
    unchanged. Concurrent requests are decoded together in batches.
    """
    import uvicorn

    from translator.decoding.translator import Translator
    from translator.serving.app import ServeSettings, create_app

    _check_at_least_one(
        port=port, max_batch_tokens=max_batch_tokens, max_sentences=max_sentences,
        max_chars=max_chars, max_body_bytes=max_body_bytes, threads=threads,
    )  # fmt: skip
    if timeout <= 0 or batch_wait_ms < 0:
        raise _fail("--timeout must be > 0 and --batch-wait-ms >= 0", 2)
    _setup_logging()
    translator = Translator.load(
        run, weights=weights, engine=_check_engine(engine), threads=threads
    )
    if translator.engine == "torch":
        # Batches of a few requests' sentences decode fastest side by side, one thread each
        # (as CTranslate2's do): 2 x 1 thread served 28% more requests/s than 1 x 2 threads.
        import torch

        torch.set_num_threads(1)  # the process's, set once: the decoding threads share it
        translator.parallel_batches = threads or len(os.sched_getaffinity(0))
    settings = ServeSettings(
        max_body_bytes=max_body_bytes, max_sentences=max_sentences, max_chars=max_chars,
        timeout_s=timeout, max_batch_tokens=max_batch_tokens, batch_wait_ms=batch_wait_ms,
        api_key=api_key,
    )  # fmt: skip
    app = create_app(translator, settings)
    typer.echo(_what_decodes(translator))
    typer.echo(f"serving on http://{host}:{port} (Ctrl-C stops)")
    uvicorn.run(app, host=host, port=port, log_level="warning")
