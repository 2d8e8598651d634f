"""`translator serve`: a trained run behind an HTTP API, the LibreTranslate API and a web page.

    app = create_app(Translator.load("runs/a"), ServeSettings())
    uvicorn.run(app, host="127.0.0.1", port=8000)

Endpoints:
    POST /v1/translate   {"text": str | [str], "beam_size", "alpha", "nbest", "attention"}
    GET  /v1/info        the run, the model, its vocabularies, val BLEU, engine, limits
    GET  /health
    POST /translate      LibreTranslate's API (serving/libretranslate.py: also /detect,
    GET  /languages       /frontend/settings; JSON or form bodies)
    GET  /               the page (translator/web), served from here: it works offline

The model is loaded once. Requests' sentences are queued and decoded together (`Batcher`): a
decoding thread that comes free takes every request queued (up to `max_batch_tokens` source
words; a lone request waits at most `batch_wait_ms` for company), off the event loop; the engine
decodes `parallel_batches` batches side by side, one thread each. `/health` counts the batches
decoded and the sentences they held. A text is split into lines and sentences
(serving/documents.py) and joined back. Every error is a JSON object {"error": "..."} with a 4xx
status (a 500 only for a bug, and the server goes on serving).
"""

# No `from __future__ import annotations` here: FastAPI reads the endpoints' annotations, which
# name request models built inside create_app.
import asyncio
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated

from translator.serving.documents import Document, sentencizer
from translator.serving.errors import ServeError
from translator.serving.libretranslate import add_libretranslate_routes, check_unicode
from translator.serving.queue import Batcher

log = logging.getLogger("translator")

WEB = Path(__file__).resolve().parent / "web"
DRAIN_BYTES = 64_000_000  # an oversized body is read (and dropped) up to this, to answer 413


@dataclass(frozen=True)
class ServeSettings:
    max_body_bytes: int = 1_000_000  # larger requests: 413
    max_sentences: int = 100  # per request, after splitting texts into sentences: 413
    max_chars: int = 1000  # per sentence: 422
    timeout_s: float = 30.0  # per request, queueing included: 504
    max_batch_tokens: int = 2048  # source words decoded together, at most
    # how long a lone request waits for company: 0 measured best at every load (bench_serve)
    batch_wait_ms: float = 0.0
    max_beam: int = 10
    max_nbest: int = 5
    api_key: str | None = None  # required by the LibreTranslate endpoints when set (403)


def _request_models():
    """The request bodies (pydantic models; built on first use so that importing this module
    stays cheap)."""
    from pydantic import BaseModel, ConfigDict, Field

    Texts = Annotated[str | list[str], Field(description="a text, or a list of texts")]

    class TranslateRequest(BaseModel):
        model_config = ConfigDict(extra="forbid", strict=True)
        text: Texts
        beam_size: int | None = Field(None, ge=1)
        alpha: float | None = Field(None, ge=0)
        nbest: int = Field(1, ge=1)
        attention: bool = False

    return TranslateRequest


def create_app(translator, settings: ServeSettings | None = None):
    """The FastAPI app serving `translator` (either engine: Translator or CTranslate2Translator)."""
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException

    settings = settings or ServeSettings()
    TranslateRequest = _request_models()
    cfg = translator.cfg
    src_lang, tgt_lang = cfg.data.src_lang, cfg.data.tgt_lang
    nlp = sentencizer(src_lang)

    def decode(sentences: list[str], beam_size: int, alpha: float, nbest: int, attention: bool):
        """Per sentence: its (translation, score) pairs, and its heatmap when asked (from the
        same search)."""
        options = dict(beam_size=beam_size, length_penalty=alpha, nbest=nbest)
        if attention:
            return translator.translate_with_attention(sentences, **options)
        if nbest > 1:
            return [(hyps, None) for hyps in translator.translate_nbest(sentences, **options)]
        hyps = translator.translate(sentences, beam_size=beam_size, length_penalty=alpha)
        return [([(hyp, None)], None) for hyp in hyps]

    batcher = Batcher(
        decode,
        settings.max_batch_tokens,
        settings.batch_wait_ms / 1000,
        translator.parallel_batches,
    )

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(
        title="translator",
        summary=f"{src_lang}→{tgt_lang} translation with a trained run",
        lifespan=lifespan,
    )
    app.state.batcher = batcher

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(ServeError)
    async def serve_error(request, err: ServeError):
        return error(err.status, err.message)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, err: RequestValidationError):
        problems = err.errors()
        first = problems[0] if problems else {}
        if first.get("type") == "json_invalid" or not isinstance(first.get("loc"), tuple):
            return error(400, "the body is not valid JSON (UTF-8)")
        where = ".".join(str(x) for x in first["loc"][1:]) or "body"
        return error(422, f"{where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def http_error(request, err: HTTPException):
        if err.status_code == 400:  # FastAPI could not decode the body (e.g. not UTF-8)
            return error(400, "the body is not valid JSON (UTF-8)")
        return error(err.status_code, str(err.detail))

    @app.exception_handler(Exception)
    async def internal(request, err: Exception):
        log.exception("internal error on %s", request.url.path)
        return error(500, "internal error (the server logged it and goes on serving)")

    @app.middleware("http")
    async def limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_body_bytes):
            # Read what the client sends (up to a bound) before answering: a client still
            # writing when the server closes gets a connection reset, not this 413.
            if length.isdigit() and int(length) <= DRAIN_BYTES:
                async for _ in request.stream():
                    pass
            answer = error(413, f"the body is over {settings.max_body_bytes:,} bytes")
            answer.headers["Connection"] = "close"
            return answer
        if length is None and request.method == "POST":
            body = await request.body()  # a chunked body has no length to check first
            if len(body) > settings.max_body_bytes:
                return error(413, f"the body is over {settings.max_body_bytes:,} bytes")
        return await call_next(request)

    def split_texts(texts: list[str]) -> list[Document]:
        check_unicode(texts)
        documents = []
        for text in texts:
            if not text.strip():
                raise ServeError(422, "text is empty")
            doc = Document.split(
                text, nlp, lambda s: len(translator.source_pieces([s])[0]),
                translator.max_source_tokens,
            )  # fmt: skip
            long = next((s for s in doc.sentences if len(s) > settings.max_chars), None)
            if long is not None:
                raise ServeError(
                    422, f"a sentence of {len(long):,} characters is over {settings.max_chars:,}"
                )
            documents.append(doc)
        total = sum(len(doc.sentences) for doc in documents)
        if total > settings.max_sentences:
            raise ServeError(
                413, f"{total} sentences in one request, over {settings.max_sentences}"
            )
        return documents

    async def translate_documents(
        texts: list[str], beam: int, alpha: float, nbest: int, attention: bool = False
    ):
        """Per text: its document, its nbest (translation, score), and its sentences'
        heatmaps (None each without `attention`)."""
        documents = await run_in_threadpool(split_texts, texts)
        sentences = [s for doc in documents for s in doc.sentences]
        try:
            results = await asyncio.wait_for(
                batcher.submit(sentences, (beam, alpha, nbest, attention)), settings.timeout_s
            )
        except asyncio.TimeoutError:
            raise ServeError(504, f"no answer within {settings.timeout_s:g} s") from None
        start = 0
        for doc in documents:
            decoded = results[start : start + len(doc.sentences)]
            start += len(doc.sentences)
            part = [hyps for hyps, _ in decoded]
            heatmaps = [heatmap for _, heatmap in decoded]
            # The k-th alternative of a text joins each sentence's k-th best (or its last).
            ranked = [
                (
                    doc.join([hyps[min(k, len(hyps) - 1)][0] if hyps else "" for hyps in part]),
                    sum(hyps[min(k, len(hyps) - 1)][1] or 0.0 for hyps in part if hyps),
                )
                for k in range(nbest)
            ]
            yield doc, ranked, heatmaps

    @app.post("/v1/translate")
    async def translate_v1(request: TranslateRequest):
        started = time.perf_counter()
        texts = [request.text] if isinstance(request.text, str) else request.text
        if not texts:
            raise ServeError(422, "text is an empty list")
        asked = dict(beam_size=request.beam_size, length_penalty=request.alpha)
        opts = translator.options.override(**asked)
        beam, alpha = opts.beam_size, opts.length_penalty
        if beam > settings.max_beam or request.nbest > settings.max_nbest:
            raise ServeError(
                422,
                f"beam_size must be at most {settings.max_beam} and nbest at most "
                f"{settings.max_nbest}",
            )
        if request.nbest > 1 and beam == 1:
            raise ServeError(422, "nbest needs beam search: beam_size must be at least nbest")
        beam = max(beam, request.nbest)
        items = []
        asked = (texts, beam, alpha, request.nbest, request.attention)
        async for doc, ranked, heatmaps in translate_documents(*asked):
            item: dict = {"text": ranked[0][0], "warnings": doc.warnings}
            if request.nbest > 1:
                item["nbest"] = [
                    {"text": t, "score": round(sc, 4) if math.isfinite(sc) else None}
                    for t, sc in ranked
                ]  # (a model that scored nothing: -inf, which JSON cannot hold)
            if request.attention:
                item["attention"] = [as_json(heatmap) for heatmap in heatmaps]
            items.append(item)
        return {
            "translations": items,
            "engine": translator.engine,
            "beam_size": beam,
            "alpha": alpha,
            "seconds": round(time.perf_counter() - started, 4),
        }

    def as_json(heatmap) -> dict | None:
        if heatmap is None:  # a sentence with no token the model reads
            return None
        source, target, weights = heatmap
        return {
            "source": source,
            "target": target,
            "weights": [[round(float(x), 4) for x in row] for row in weights[-1]],
        }

    card = model_card(translator, settings)  # the served model does not change

    @app.get("/v1/info")
    async def info():
        return card

    @app.get("/health")
    async def health():
        # batches decoded so far and the sentences they held: what batching achieves
        return {"status": "ok", "batches": batcher.batches, "sentences": batcher.sentences}

    add_libretranslate_routes(app, translator, settings, translate_documents)

    if (WEB / "index.html").exists():
        app.mount("/static", StaticFiles(directory=WEB), name="static")

        @app.get("/", include_in_schema=False)
        async def page():
            return FileResponse(WEB / "index.html")

    return app


def model_card(translator, settings: ServeSettings) -> dict:
    """What /v1/info says: enough to know which model answers and how."""
    from translator.run_dir import best_validation, read_init_from

    cfg = translator.cfg
    m = cfg.model
    best = best_validation(translator.run_dir) if translator.run_dir else None
    model = translator.model
    parameters = (
        sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
        if model is not None
        else None
    )
    return {
        "run": str(translator.run_dir),
        "weights": translator.weights,
        "engine": translator.engine,
        "quantization": getattr(translator, "quantization", None),
        "src_lang": cfg.data.src_lang,
        "tgt_lang": cfg.data.tgt_lang,
        "parameters": parameters,
        "model": {
            key: getattr(m, key)
            for key in ("d_model", "n_heads", "encoder_layers", "decoder_layers", "d_ff", "norm")
        },
        "max_source_tokens": translator.max_source_tokens,
        "vocab": {"src": len(translator.src_vocab), "tgt": len(translator.tgt_vocab)},
        "val_bleu": best[0] if best else None,
        "steps": best[1] if best else None,
        "init_from": read_init_from(translator.run_dir),
        "decode": asdict(translator.options),
        "limits": asdict(settings),
    }
