"""`translator serve`: every endpoint, every kind of bad request, batching, documents."""

import asyncio
import json
import threading
import time

import httpx
import pytest
from conftest import toy_overrides, toy_pairs, write_split
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from translator.cli.main import app as cli
from translator.decoding.translator import Translator
from translator.serving.app import ServeSettings, create_app


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny run trained on the toy corpus (once for this module)."""
    root = tmp_path_factory.mktemp("serve")
    data = root / "data"
    data.mkdir()
    for split, n, seed in (("train", 400, 1), ("val", 40, 2), ("test_2016_flickr", 40, 3)):
        write_split(data, split, toy_pairs(n, seed))
    overrides = toy_overrides(data, "train.max_steps=60", "model.d_model=64", "model.d_ff=128")
    result = CliRunner().invoke(
        cli,
        ["train", "-c", "configs/tiny.yaml", "--run-dir", str(root / "run"), "--no-progress"]
        + [x for pair in overrides for x in ("--set", pair)],
        env={"TRANSLATOR_CACHE_DIR": str(root / "cache")},
    )
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.fixture(scope="module")
def translator(run):
    return Translator.load(run)


@pytest.fixture
def client(translator):
    with TestClient(create_app(translator, ServeSettings(max_sentences=20, max_chars=300))) as c:
        yield c


def test_health_info_and_languages(client, run, translator):
    assert client.get("/health").json() == {"status": "ok", "batches": 0, "sentences": 0}
    info = client.get("/v1/info").json()
    assert info["run"] == str(run) and info["engine"] == "torch"
    assert info["vocab"] == {"src": len(translator.src_vocab), "tgt": len(translator.tgt_vocab)}
    assert info["decode"]["beam_size"] == translator.options.beam_size
    # the served weights are the best validation's: its BLEU and step, whichever step it was
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if "val_bleu" in r]
    best = max(valid, key=lambda r: r["val_bleu"])
    assert info["parameters"] > 0 and len(valid) > 1
    assert (info["val_bleu"], info["steps"]) == (best["val_bleu"], best["step"])
    assert client.get("/languages").json() == [
        {"code": "en", "name": "English", "targets": ["de"]},
        {"code": "de", "name": "German", "targets": []},
    ]


def test_translate_matches_the_python_api(client, translator):
    sentences = ["A dog runs in the park.", "Two girls sleep at the beach."]
    expected = translator.translate(sentences, beam_size=2, length_penalty=1.0)
    body = client.post("/v1/translate", json={"text": sentences, "beam_size": 2, "alpha": 1.0})
    assert body.status_code == 200, body.text
    answer = body.json()
    assert [t["text"] for t in answer["translations"]] == expected
    assert (answer["beam_size"], answer["alpha"], answer["engine"]) == (2, 1.0, "torch")
    single = client.post("/v1/translate", json={"text": sentences[0]}).json()
    assert single["translations"][0]["text"] == translator.translate(sentences[:1])[0]


def test_nbest_and_attention(client, translator):
    body = client.post(
        "/v1/translate", json={"text": "A man waits.", "nbest": 3, "attention": True}
    ).json()
    (item,) = body["translations"]
    scores = [alt["score"] for alt in item["nbest"]]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert item["nbest"][0]["text"] == item["text"]
    (attention,) = item["attention"]  # one sentence
    weights = attention["weights"]
    assert len(weights) == len(attention["target"]) and attention["target"][-1] == "<eos>"
    assert all(len(row) == len(attention["source"]) for row in weights)
    assert all(abs(sum(row) - 1) < 1e-2 for row in weights)  # each a distribution over source
    assert attention["source"] == [*translator.source_pieces(["A man waits."])[0], "<eos>"]


def test_a_heatmap_comes_from_the_search_that_made_the_translation(client, translator):
    """One search per request, attention or not; a batch's heatmaps are each sentence's own."""
    from translator.data.tokenization import detokenize

    searches = []
    for name in ("_search", "_search_nbest"):
        original = getattr(translator, name)

        def counted(batch, opts, original=original):
            searches.append(len(batch))
            return original(batch, opts)

        setattr(translator, name, counted)
    try:
        text = "A man waits. Two girls play in the snow."
        body = client.post("/v1/translate", json={"text": text, "nbest": 2, "attention": True})
        item = body.json()["translations"][0]
    finally:
        for name in ("_search", "_search_nbest"):
            delattr(translator, name)
    assert searches == [2]  # both sentences, searched once
    first, second = item["attention"]
    assert (
        f"{detokenize(first['target'][:-1])} {detokenize(second['target'][:-1])}" == (item["text"])
    )
    sentences = ["A man waits.", "Two girls play in the snow."]
    together = translator.translate_with_attention(sentences)
    for sentence, (ranked, (source, target, weights)) in zip(sentences, together, strict=True):
        ((alone_ranked, (alone_source, alone_target, alone_weights)),) = (
            translator.translate_with_attention([sentence])
        )
        assert (ranked, source, target) == (alone_ranked, alone_source, alone_target)
        assert abs(weights - alone_weights).max() < 1e-5  # padding changes nothing


def test_a_document_keeps_its_lines_and_sentences(client, translator):
    text = "A dog runs in the park. The cat sleeps.\n\nTwo girls play at the beach."
    answer = client.post("/v1/translate", json={"text": text}).json()
    one, two, three = translator.translate(
        ["A dog runs in the park.", "The cat sleeps.", "Two girls play at the beach."]
    )
    assert answer["translations"][0]["text"] == f"{one} {two}\n\n{three}"


def test_a_sentence_longer_than_the_model_is_split_not_dropped(client, translator):
    limit = translator.max_source_tokens
    clause = "a dog runs in the park"
    long = ", ".join([clause] * (limit // 5)) + "."  # far over the limit, commas to split at
    (item,) = client.post("/v1/translate", json={"text": long}).json()["translations"]
    assert item["warnings"] and f"at most {limit}" in item["warnings"][0]
    # Every part was translated: the output is much longer than one cut-off part would be.
    cut = translator.translate([long])[0]  # the translator alone cuts to the limit
    assert len(item["text"].split()) > 1.5 * len(cut.split())


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b'{"text": "A dog.",', 400, "not valid JSON"),
        ('{"text": "Caf\xe9"}'.encode("latin-1"), 400, "not valid JSON"),
        (json.dumps({"text": 5}), 422, "text"),
        (json.dumps({"text": ["A dog.", 3]}), 422, "text"),
        (json.dumps({"text": "   "}), 422, "text is empty"),
        (json.dumps({"text": []}), 422, "empty list"),
        (json.dumps({}), 422, "text: Field required"),
        (json.dumps({"text": "A dog.", "beam": 5}), 422, "beam"),
        (json.dumps({"text": "A dog.", "beam_size": 0}), 422, "beam_size"),
        (json.dumps({"text": "A dog.", "beam_size": 99}), 422, "beam_size"),
        (json.dumps({"text": "A dog.", "alpha": -1}), 422, "alpha"),
        (json.dumps({"text": "A dog.", "beam_size": 1, "nbest": 2}), 422, "nbest"),
        (json.dumps({"text": ["A dog."] * 21}), 413, "21 sentences"),
        (json.dumps({"text": "A dog runs. " * 21}), 413, "21 sentences"),
        (json.dumps({"text": "x" * 301}), 422, "301 characters"),
        (json.dumps({"text": "A dog. " * 200_000}), 413, "bytes"),
        (b"text=A+dog", 400, "not valid JSON"),
    ],
)
def test_bad_requests_are_4xx_json_and_the_server_keeps_serving(client, body, status, message):
    answer = client.post(
        "/v1/translate", content=body, headers={"content-type": "application/json"}
    )
    assert answer.status_code == status, answer.text
    assert set(answer.json()) == {"error"} and message in answer.json()["error"]
    assert client.post("/v1/translate", json={"text": "A dog runs."}).status_code == 200


def test_libretranslate_clients_work_unchanged(client, translator):
    expected = translator.translate(["A dog runs.", "The cat waits."])
    answer = client.post("/translate", json={"q": "A dog runs.", "source": "en", "target": "de"})
    assert answer.status_code == 200 and answer.json() == {"translatedText": expected[0]}
    answer = client.post(
        "/translate",
        json={"q": ["A dog runs.", "The cat waits."], "source": "auto", "target": "de",
              "format": "text", "api_key": "", "alternatives": 2},
    ).json()  # fmt: skip
    # Alternatives widen the beam to hold them.
    assert answer["translatedText"] == translator.translate(
        ["A dog runs.", "The cat waits."], beam_size=3
    )
    assert len(answer["alternatives"]) == 2 and all(len(a) == 2 for a in answer["alternatives"])

    for body, message in (
        ({"q": "A dog.", "source": "en", "target": "fr"}, "translates en to de, not en to fr"),
        ({"q": "A dog.", "source": "de", "target": "en"}, "not de to en"),
        ({"q": "<b>A dog.</b>", "source": "en", "target": "de", "format": "html"}, "html"),
        ({"q": "", "source": "en", "target": "de"}, "empty"),
        ({"source": "en", "target": "de"}, "q"),
    ):
        answer = client.post("/translate", json=body)
        assert answer.status_code == 400 and message in answer.json()["error"], answer.text


def test_a_slow_request_times_out_with_504(translator, monkeypatch):
    settings = ServeSettings(timeout_s=0.2)
    app = create_app(translator, settings)
    slow = threading.Event()
    original = translator.translate

    def slow_translate(*args, **kwargs):
        if slow.is_set():
            time.sleep(0.5)
        return original(*args, **kwargs)

    monkeypatch.setattr(translator, "translate", slow_translate)
    with TestClient(app) as client:
        slow.set()
        answer = client.post("/v1/translate", json={"text": "A dog runs."})
        assert answer.status_code == 504 and "0.2 s" in answer.json()["error"]
        slow.clear()
        time.sleep(0.5)  # the slow batch finishes on the decoding thread
        assert client.post("/v1/translate", json={"text": "A dog runs."}).status_code == 200


def test_concurrent_requests_are_decoded_in_shared_batches(translator, monkeypatch):
    batches = []
    original = translator.translate

    def counting(sentences, **kwargs):
        batches.append(len(sentences))
        return original(sentences, **kwargs)

    monkeypatch.setattr(translator, "translate", counting)
    app = create_app(translator, ServeSettings(batch_wait_ms=200))
    sentences = [f"A dog runs in the park {i}." for i in range(16)]

    async def main():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app):
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
                answers = await asyncio.gather(
                    *(http.post("/v1/translate", json={"text": s}) for s in sentences)
                )
                health = (await http.get("/health")).json()
        return [a.json()["translations"][0]["text"] for a in answers], health

    texts, health = asyncio.run(main())
    assert sum(batches) == 16 and len(batches) < 16, batches  # shared, not one per request
    assert (health["batches"], health["sentences"]) == (len(batches), 16)  # what /health tells
    assert texts == original(sentences)  # and each answer went to its own request
