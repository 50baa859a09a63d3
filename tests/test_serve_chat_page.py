"""The web chat in headless Chromium (Debian's, driven by playwright; no browser download)."""

from __future__ import annotations

import shutil
import time

import pytest

from infer.runtime import engine
from infer.serve import spec as spec_lib
from infer.serve import worker as worker_lib
from infer.serve.worker import Worker
from tests.serve_server import running
from tests.test_export_common import tiny_twofiles_model

pytestmark = pytest.mark.slow
SCREENSHOT = "/tmp/serve_chat.png"
TYPED = "<script>window.pwned = 1</script><b>hi</b>"


@pytest.fixture(scope="module")
def browser():
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium; .ci/run installs it)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


def test_chat_page_streams_a_reply_shown_as_text_and_keeps_the_conversation(browser):
    model = tiny_twofiles_model()
    messages = [{"role": "system", "content": "be kind"}, {"role": "user", "content": TYPED}]
    room = model.config.max_seq_len - len(engine.prompt_ids(model, messages, chat=True))
    expected = engine.generate_text(model, [messages], chat=True, temperature=0.0,
                                    max_new_tokens=min(spec_lib.DEFAULT_MAX_TOKENS, room))[0]
    outside = []
    with running(Worker({"tiny": model})) as url:
        page = browser.new_page()
        page.on("request", lambda r: None if r.url.startswith(url) else outside.append(r.url))
        page.goto(url + "/")
        page.wait_for_selector("#model option[value=tiny]", state="attached")
        page.fill("#system", "be kind")
        page.fill("#temperature", "0")
        page.fill("#input", TYPED)
        page.press("#input", "Enter")
        page.wait_for_selector(".assistant", state="attached")
        page.wait_for_selector("#send:enabled")
        user = page.eval_on_selector(".user", "e => e.textContent")
        reply = page.eval_on_selector(".assistant", "e => e.textContent")
        assert user == TYPED
        assert reply == expected.text and reply
        assert page.evaluate("() => window.pwned") is None
        assert page.eval_on_selector_all("#log script, #log b", "es => es.length") == 0
        assert page.evaluate("() => conversation.map(m => m.role)") == ["user", "assistant"]
        page.screenshot(path=SCREENSHOT, full_page=True)
        page.close()
    assert outside == []


def test_stop_button_ends_the_stream(browser, monkeypatch):
    model = tiny_twofiles_model()
    emit = worker_lib.Job.emit

    def slow_emit(job, kind, value):  # a slow model: Stop comes while the reply streams
        time.sleep(0.05)
        emit(job, kind, value)

    monkeypatch.setattr(worker_lib.Job, "emit", slow_emit)
    with running(Worker({"tiny": model})) as url:
        page = browser.new_page()
        page.goto(url + "/")
        page.wait_for_selector("#model option[value=tiny]", state="attached")
        page.fill("#input", "tell me a story")
        page.press("#input", "Enter")
        page.wait_for_selector("#stop:enabled")
        page.click("#stop")
        page.wait_for_selector("#send:enabled", timeout=3000)
        assert page.is_disabled("#stop")
        assert page.evaluate("() => conversation.length") == 2
        assert page.eval_on_selector_all(".error", "es => es.length") == 0
        page.close()
