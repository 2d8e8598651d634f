"""LibreTranslate's own Python clients, unchanged, against a live `translator serve`: every call
they offer that the server supports answers as LibreTranslate does, the others are refused as a
LibreTranslate server with them turned off refuses; and hostile requests get an HTTP answer."""

import asyncio
import json
import socket
import urllib.parse

import httpx
import pytest
from conftest import served, tiny, write_toy_corpus
from libretranslate_aio import AsyncLibreTranslate, LibreTranslate
from libretranslate_aio.exceptions import BadRequestError, ForbiddenError
from libretranslatepy import LibreTranslateAPI

from translator.decoding.translator import Translator
from translator.training.trainer import Trainer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("libre")
    data = write_toy_corpus(root / "toy")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRANSLATOR_CACHE_DIR", str(root / "cache"))
        cfg = tiny(data, "train.max_steps=60", "model.d_model=64", "model.d_ff=128")
        return Trainer(cfg, root / "run", progress=False).train()


@pytest.fixture(scope="module")
def server(run):
    with served(run, {}) as base:
        yield base


@pytest.fixture(scope="module")
def expected(run):
    translator = Translator.load(run)
    return lambda texts, **options: translator.translate(texts, **options)


def test_libretranslatepy_translates_detects_and_lists_languages(server, expected):
    client = LibreTranslateAPI(server)
    assert client.translate("A dog runs.", "en", "de") == expected(["A dog runs."])[0]
    assert client.translate("A dog runs.", "auto", "de") == expected(["A dog runs."])[0]
    (detected,) = client.detect("A dog runs through the snow.")
    assert detected["language"] == "en" and 0 <= detected["confidence"] <= 100
    assert client.languages()[0] == {"code": "en", "name": "English", "targets": ["de"]}


def test_libretranslate_aio_every_call(server, expected):
    texts = ["A dog runs.", "The cat waits."]
    with LibreTranslate(server) as client:
        one = client.translate(texts[0], "en", "de")
        assert one.translated_text == expected(texts[:1])[0] and one.detected_language is None
        many = client.translate(texts, "auto", "de", alternatives=2)
        assert many.translated_text == expected(texts, beam_size=3)  # the beam holds 3
        assert len(many.alternatives) == 2 and all(len(a) == 2 for a in many.alternatives)
        assert [d.language for d in many.detected_language] == ["en", "en"]
        assert client.detect("Two men play chess.")[0].language == "en"
        assert [lang.code for lang in client.languages()] == ["en", "de"]
        settings = client.frontend_settings()
        assert settings.language.source.code == "en" and settings.language.target.code == "de"
        assert not settings.key_required and settings.char_limit > 0
        assert client.health()
        with pytest.raises(ForbiddenError, match="Suggestions are disabled"):
            client.suggest("A dog.", "Ein Hund.", "en", "de")
        with pytest.raises(ForbiddenError, match="disabled"):
            client.translate_file(__file__, "en", "de")
        with pytest.raises(BadRequestError, match="html"):
            client.translate("<b>A dog.</b>", "en", "de", format="html")
        with pytest.raises(BadRequestError, match="not en to fr"):
            client.translate("A dog.", "en", "fr")

    async def async_call():
        async with AsyncLibreTranslate(server) as client:
            return (await client.translate("A dog runs.", "en", "de")).translated_text

    assert asyncio.run(async_call()) == expected(texts[:1])[0]


def test_json_and_multipart_bodies_too(server, expected):
    with httpx.Client(base_url=server) as http:
        answer = http.post("/translate", json={"q": "A dog runs.", "source": "en", "target": "de"})
        assert answer.json() == {"translatedText": expected(["A dog runs."])[0]}
        form = {"q": "A dog runs.", "source": "en", "target": "de"}
        answer = http.post("/translate", data=form, files={"unused": ("x.txt", b"x")})
        assert answer.json() == {"translatedText": expected(["A dog runs."])[0]}


def test_a_detected_foreign_text_has_low_confidence(server):
    with LibreTranslate(server) as client:
        english = client.detect("A man is riding a bike down the street.")[0].confidence
        other = client.detect("Xqzt vlorp grambly snuffix wozzle.")[0].confidence
    assert english > other


def test_an_api_key_is_required_only_when_the_server_has_one(run, expected):
    with served(run, {}, "--api-key", "s3cret") as base:
        with LibreTranslate(base) as client, pytest.raises(ForbiddenError, match="API key"):
            client.translate("A dog runs.", "en", "de")
        with LibreTranslate(base, api_key="wrong") as client, pytest.raises(ForbiddenError):
            client.detect("A dog runs.")
        with LibreTranslate(base, api_key="s3cret") as client:
            assert (
                client.translate("A dog runs.", "en", "de").translated_text
                == expected(["A dog runs."])[0]
            )
            assert client.frontend_settings().key_required
        assert LibreTranslateAPI(base, api_key="s3cret").detect("A dog.")[0]["language"] == "en"


def test_hostile_requests_get_an_answer_and_the_server_goes_on(server, expected):
    with httpx.Client(base_url=server) as http:
        lone = b'{"q": "A dog \\ud800 runs.", "source": "en", "target": "de"}'
        answer = http.post("/translate", content=lone, headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "surrogate" in answer.json()["error"]
        answer = http.post("/v1/translate", content=b'{"text": "\\udfff"}',
                           headers={"content-type": "application/json"})  # fmt: skip
        assert answer.status_code == 400 and "surrogate" in answer.json()["error"]
        form = urllib.parse.urlencode({"q": "A dog.", "source": "en"}).encode() + b"&target=%FF"
        urlencoded = {"content-type": "application/x-www-form-urlencoded"}
        answer = http.post("/translate", content=form, headers=urlencoded)
        assert 400 <= answer.status_code < 500 and "error" in answer.json()

    # 20 MB: the client gets its 413 (no connection reset while it is still sending).
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        size = 20_000_000
        sock.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {size}\r\n\r\n".encode())  # fmt: skip
        chunk = b"x" * 1_000_000
        for _ in range(size // len(chunk)):
            sock.sendall(chunk)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert "over 1,000,000 bytes" in json.loads(body)["error"]
    with LibreTranslate(server) as client:  # still serving
        assert (
            client.translate("A dog runs.", "en", "de").translated_text
            == expected(["A dog runs."])[0]
        )
