"""The served web page in a real browser: `translator serve` on a tiny toy run, driven by Chromium.

Skipped where Chromium or the playwright package is missing (`make browser` installs Chromium on
Debian/Ubuntu; Playwright's own browser download is not needed: the system Chromium is used).
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, served, toy_overrides, write_toy_corpus
from typer.testing import CliRunner

from translator.cli.main import app
from translator.run_dir import latest_run

CHROMIUM = "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else shutil.which("chromium")
try:
    from playwright.sync_api import sync_playwright
except ImportError:
    sync_playwright = None

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium browser (make browser installs one)"),
    pytest.mark.skipif(sync_playwright is None, reason="the playwright package is not installed"),
]


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    """A tiny run trained on the toy corpus, served by `translator serve` on a free local port."""
    root = tmp_path_factory.mktemp("page")
    data = write_toy_corpus(root / "toy_multi30k")
    env = {
        "TRANSLATOR_CACHE_DIR": str(root / "cache"),
        "TRANSLATOR_RUNS_DIR": str(root / "runs"),
    }
    overrides = toy_overrides(data, "train.max_steps=60", "model.d_model=64", "model.d_ff=128")
    args = ["train", "-c", str(ROOT / "configs/tiny.yaml"), "--no-progress"]
    args += [x for pair in overrides for x in ("--set", pair)]
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        run = latest_run(root / "runs")

    with served(run, env) as base:
        yield base


def check_page(base: str, screenshots: list[Path]) -> None:
    """Translate a sentence on the page and check it shows what the API answered, then an error."""
    info = json.loads(get(base + "/v1/info")[1])
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"], headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(20_000)
            page_errors = []
            page.on("pageerror", lambda err: page_errors.append(str(err)))

            page.goto(base + "/")
            page.wait_for_selector("#model-card[data-state=ready]")
            card = page.inner_text("#model-card")
            assert info["engine"] in card and f"{info['parameters']:,}" in card, card
            assert page.locator("#error").is_hidden()

            page.fill("#source", "A dog runs in the park.")
            page.fill("#beam", "3")
            page.fill("#nbest", "2")
            with page.expect_response(lambda r: r.url.endswith("/v1/translate")) as answer:
                page.click("#translate")
            assert answer.value.status == 200, answer.value.text()
            sent = json.loads(answer.value.request.post_data)
            assert sent["attention"] is True and (sent["beam_size"], sent["nbest"]) == (3, 2)
            result = answer.value.json()["translations"]
            assert len(result) == 1
            page.wait_for_function("document.querySelector('#translation').innerText.trim() !== ''")
            page.wait_for_selector("#heatmap td")

            assert page.inner_text("#translation").strip() == result[0]["text"]
            assert page.locator("#nbest-list li").count() == 2 == len(result[0]["nbest"])
            attention = result[0]["attention"][0]
            rows, columns = len(attention["target"]), len(attention["source"])
            assert page.locator("#heatmap tbody tr").count() == rows
            assert page.locator("#heatmap thead th.src").count() == columns
            cells = page.locator("#heatmap tbody td")
            assert cells.count() == rows * columns
            shown = [float(w) for w in cells.evaluate_all("cs => cs.map(c => c.dataset.weight)")]
            for i in range(rows):  # row by row: the cells show the weights the API sent
                row = shown[i * columns : (i + 1) * columns]
                assert row == pytest.approx(attention["weights"][i], abs=1e-3)
            title = cells.first.get_attribute("title")  # "Ein ← A: 0.650"
            assert float(title.rsplit(": ", 1)[1]) == pytest.approx(
                attention["weights"][0][0], abs=1e-3
            )
            assert page.locator("#error").is_hidden()
            for path in screenshots:
                path.parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(path), full_page=True)

            # An empty text, sent with Ctrl+Enter: the API's one-line error shows in the error box.
            page.fill("#source", "")
            with page.expect_response(lambda r: r.url.endswith("/v1/translate")) as answer:
                page.press("#source", "Control+Enter")
            assert 400 <= answer.value.status < 500
            message = answer.value.json()["error"]
            page.wait_for_selector("#error", state="visible")
            assert page.inner_text("#error").strip() == message
            assert page.locator("#translate").is_enabled()
            assert not page_errors, page_errors
        finally:
            browser.close()


def test_the_page_translates_and_shows_errors(server, tmp_path):
    screenshots = [tmp_path / "page.png"]
    if os.environ.get("TRANSLATOR_SCREENSHOT"):
        screenshots.append(Path(os.environ["TRANSLATOR_SCREENSHOT"]))
    check_page(server, screenshots)
