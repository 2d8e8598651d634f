"""LibreTranslate's API, as its own clients use it (libretranslatepy, libretranslate-aio, the
LibreTranslate web page): a drop-in server for one language pair.

    add_libretranslate_routes(app, translator, settings, translate_documents)

    POST /translate          q (a text or a list), source ("auto" too), target, format, alternatives
    POST /detect             q -> [{"language", "confidence"}]
    GET  /languages          the pair
    GET  /frontend/settings  limits, whether an API key is needed, the pair
    POST /suggest, /translate_file   refused as a LibreTranslate server with them off refuses

Bodies are JSON, `application/x-www-form-urlencoded` or `multipart/form-data`, as LibreTranslate
accepts (its Python clients post forms; a list `q` is the field repeated). `api_key` is accepted
and ignored, unless the server was started with an API key: then it is required (403 without).
Errors are LibreTranslate's shape, {"error": "..."}, with its status codes: 400 for input, 403
for a key or a disabled feature.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations.
import json
import re

from translator.serving.errors import ServeError

LANGUAGE_NAMES = {"en": "English", "de": "German", "fr": "French", "cs": "Czech", "es": "Spanish"}
SURROGATE = re.compile("[\ud800-\udfff]")


def language_name(code: str) -> str:
    return LANGUAGE_NAMES.get(code, code)


def check_unicode(texts: list[str]) -> None:
    """Text that JSON can carry but Unicode cannot (a lone surrogate escape such as "\\ud800")
    is refused before it reaches the tokenizer."""
    for text in texts:
        found = SURROGATE.search(text)
        if found:
            raise ServeError(400, f"the text holds an unpaired surrogate U+{ord(found[0]):04X}: "
                                  "not valid Unicode")  # fmt: skip


async def read_fields(request) -> dict:
    """The body's fields from JSON, a urlencoded form or a multipart form; a repeated form field
    (a list `q`) becomes a list."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.form()
        fields = {}
        for key in form:
            values = [v for v in form.getlist(key) if isinstance(v, str)]
            if values:
                fields[key] = values if len(values) > 1 or key == "q[]" else values[0]
        if "q[]" in fields:
            fields["q"] = fields.pop("q[]")
        return fields
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        fields = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ServeError(400, "the body is not valid JSON (UTF-8)") from None
    if not isinstance(fields, dict):
        raise ServeError(400, "the body must be a JSON object")
    return fields


def add_libretranslate_routes(app, translator, settings, translate_documents) -> None:
    from fastapi import Request
    from pydantic import BaseModel, ConfigDict, Field, ValidationError

    cfg = translator.cfg
    src, tgt = cfg.data.src_lang, cfg.data.tgt_lang

    class LibreRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        q: str | list[str]
        source: str = "auto"
        target: str | None = None
        format: str = "text"
        alternatives: int = Field(0, ge=0)
        api_key: str | None = None

    async def parse(request: Request, model):
        fields = await read_fields(request)
        if settings.api_key is not None and fields.get("api_key") != settings.api_key:
            raise ServeError(403, "Invalid API key")
        try:
            return model.model_validate(fields)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(x) for x in first["loc"]) or "body"
            raise ServeError(400, f"{where}: {first['msg']}") from None

    def texts_of(q) -> list[str]:
        texts = [q] if isinstance(q, str) else q
        if not texts:
            raise ServeError(400, "q is an empty list")
        check_unicode(texts)
        return texts

    @app.post("/translate")
    async def translate(request: Request):
        body = await parse(request, LibreRequest)
        if body.source not in ("auto", src) or body.target not in (None, tgt):
            raise ServeError(
                400, f"this model translates {src} to {tgt}, not {body.source} to {body.target}"
            )
        if body.format != "text":
            raise ServeError(400, f"format {body.format!r} is not supported: use text")
        texts = texts_of(body.q)
        if body.alternatives >= settings.max_nbest:
            raise ServeError(400, f"alternatives must be below {settings.max_nbest}")
        n = 1 + body.alternatives
        beam, alpha = translator.options.beam_size, translator.options.length_penalty
        translated, alternatives = [], []
        try:
            async for _, ranked, _ in translate_documents(texts, max(beam, n), alpha, n):
                translated.append(ranked[0][0])
                alternatives.append([t for t, _ in ranked[1:]])
        except ServeError as err:  # LibreTranslate answers input errors with 400
            raise ServeError(400 if err.status == 422 else err.status, err.message) from None
        single = isinstance(body.q, str)
        answer: dict = {"translatedText": translated[0] if single else translated}
        if body.alternatives:
            answer["alternatives"] = alternatives[0] if single else alternatives
        if body.source == "auto":
            detected = [detect_one(text) for text in texts]
            answer["detectedLanguage"] = detected[0] if single else detected
        return answer

    def detect_one(text: str) -> dict:
        """The served source language, with how much of the text the model reads as whole
        known words (0-100): the share of its words that the BPE keeps in one piece. A text in
        another language falls apart into pieces and scores low."""
        tokens = translator.tokenizer.tokenize([text])[0]
        words = [t for t in tokens if any(c.isalpha() for c in t)]
        if not words:
            return {"language": src, "confidence": 0.0}
        stoi = translator.src_vocab.stoi
        segmented = translator.source_pieces(words)  # each word alone: its BPE pieces (or itself)
        known = sum(len(pieces) == 1 and pieces[0] in stoi for pieces in segmented)
        return {"language": src, "confidence": round(100.0 * known / len(words), 1)}

    class DetectRequest(BaseModel):
        model_config = ConfigDict(extra="ignore")
        q: str
        api_key: str | None = None

    @app.post("/detect")
    async def detect(request: Request):
        body = await parse(request, DetectRequest)
        (text,) = texts_of(body.q)
        if not text.strip():
            raise ServeError(400, "q is empty")
        return [detect_one(text)]

    @app.get("/languages")
    async def languages():
        return [
            {"code": src, "name": language_name(src), "targets": [tgt]},
            {"code": tgt, "name": language_name(tgt), "targets": []},
        ]

    @app.get("/frontend/settings")
    async def frontend_settings():
        return {
            "charLimit": settings.max_chars * settings.max_sentences,
            "frontendTimeout": 500,
            "apiKeys": settings.api_key is not None,
            "keyRequired": settings.api_key is not None,
            "suggestions": False,
            "filesTranslation": False,
            "supportedFilesFormat": [],
            "language": {
                "source": {"code": src, "name": language_name(src)},
                "target": {"code": tgt, "name": language_name(tgt)},
            },
        }

    @app.post("/suggest")
    async def suggest():
        raise ServeError(403, "Suggestions are disabled on this server.")

    @app.post("/translate_file")
    async def translate_file():
        raise ServeError(403, "Files translation are disabled on this server.")
