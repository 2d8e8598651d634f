"""Stage 5, serving: the HTTP API and web page around a `Translator` (documents split into
sentences, the queue that decodes concurrent requests together, the FastAPI app, `web/`).

May import decoding, model, data and the shared top-level modules; never training or cli.
"""
