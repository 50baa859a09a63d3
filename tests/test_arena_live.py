"""The arena as a user runs it: `python -m evals arena` in its own process over two tiny
twofiles models exported to the two files. A SIGKILL loses no acknowledged vote, and a headless
Chromium (Debian's package, driven by playwright) battles, votes and reads the leaderboard."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from infer.formats.export import export
from tests.test_export_common import tiny_twofiles_model

CHROMIUM = shutil.which("chromium")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def arena_server(tmp_path):
    """(base URL, votes path, process) of a running arena over models 'left' and 'right'."""
    flags = []
    for name, seed in (("left", 0), ("right", 1)):
        out = tmp_path / name
        export(tiny_twofiles_model(seed=seed), "twofiles", out)
        flags += ["--model", f"{name}={out}"]
    db, port = tmp_path / "votes.sqlite", free_port()
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one device, as a user has
    server = subprocess.Popen(
        [sys.executable, "-m", "evals", "arena", *flags, "--db", str(db), "--port", str(port),
         "--max-new-tokens", "6"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if server.poll() is not None:
                pytest.fail(f"the arena exited: {server.stdout.read().decode()}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the arena did not answer /health within 180 s")
            time.sleep(0.5)
        yield url, db, server
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()


@pytest.mark.slow
def test_a_killed_arena_loses_no_acknowledged_vote(arena_server):
    url, db, server = arena_server
    acknowledged = []
    with httpx.Client(base_url=url, timeout=120) as client:
        for winner in ("model_a", "model_b", "tie", "tie (bothbad)"):
            battle = client.post("/api/battle", json={"prompt": "hello there"})
            assert battle.status_code == 200, battle.text
            vote = client.post("/api/vote", json={"battle_id": battle.json()["battle_id"],
                                                  "winner": winner})
            assert vote.status_code == 200, vote.text
            v = vote.json()
            acknowledged.append((v["vote_id"], v["model_a"], v["model_b"], winner))
    server.send_signal(signal.SIGKILL)  # no shutdown handler, no close: only what was committed
    server.wait()
    con = sqlite3.connect(db)
    rows = con.execute("SELECT id, model_a, model_b, winner FROM votes ORDER BY id").fetchall()
    con.close()
    assert rows == acknowledged
    assert all({a, b} == {"left", "right"} for _, a, b, _ in rows)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium)")
def test_the_arena_page_in_headless_chromium(arena_server):
    from playwright.sync_api import sync_playwright

    url, db, _ = arena_server
    foreign = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, chromium_sandbox=False)
        page = browser.new_page(viewport={"width": 1100, "height": 700})
        page.on("request", lambda r: None if r.url.startswith(url) else foreign.append(r.url))
        page.goto(url)
        # a prompt that is HTML must come back as text, never as an element
        page.fill("#prompt", "<img src=x onerror=alert(1)> what is 2+2?")
        page.click("#go")
        # (selectors, not wait_for_function: the page's policy forbids evaluating strings)
        page.wait_for_selector("button[data-winner='model_a']:enabled", timeout=120_000)
        assert page.text_content("#answer_a") and page.text_content("#answer_b")
        assert page.text_content("#name_a") == "Model A"  # anonymous until the vote
        page.click("button[data-winner='model_a']")
        page.wait_for_selector("#name_a.revealed")
        revealed = {page.text_content("#name_a"), page.text_content("#name_b")}
        assert revealed == {"Model A: left", "Model B: right"} or revealed == {
            "Model A: right", "Model B: left"}
        assert "Vote recorded" in page.text_content("#status")
        assert page.query_selector("img") is None
        page.screenshot(path="/tmp/arena.png", full_page=True)

        page.goto(f"{url}/leaderboard")
        page.wait_for_selector("#ratings:not([hidden])")
        cells = page.locator("#ratings tbody tr td:nth-child(2)").all_text_contents()
        assert sorted(cells) == ["left", "right"]
        page.screenshot(path="/tmp/arena_leaderboard.png", full_page=True)
        browser.close()
    assert foreign == []
    con = sqlite3.connect(db)
    assert con.execute("SELECT winner, prompt FROM votes").fetchall() == [
        ("model_a", "<img src=x onerror=alert(1)> what is 2+2?")]
    con.close()
