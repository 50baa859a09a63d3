"""The arena: votes kept in SQLite, anonymous battles, the vote endpoint and the leaderboard,
and `python -m evals ratings` on a votes database."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from evals.arena.app import create_app
from evals.arena.votes import VoteStore
from evals.ratings import Battle, BattleError
from evals import cli_arena

NAMES = ("alpha", "beta", "gamma")


def stub_answerers():
    """Answer functions that say who they are, so a test can check the reveal."""
    return {name: (lambda prompt, name=name: f"{name} answers {prompt}") for name in NAMES}


@pytest.fixture
def arena(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    with TestClient(create_app(stub_answerers(), store, rng=random.Random(0),
                               bootstrap=20)) as client:
        yield client, tmp_path / "votes.sqlite"
    store.close()


def test_a_recorded_vote_survives_reopening_the_database(tmp_path):
    path = tmp_path / "votes.sqlite"
    store = VoteStore(path)
    store.record(Battle("a", "b", "tie (bothbad)"), "prompt", "answer a", "answer b")
    store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert db.execute("SELECT model_a, model_b, winner, prompt FROM votes").fetchall() == [
        ("a", "b", "tie (bothbad)", "prompt")]
    db.close()
    assert VoteStore(path).battles() == [Battle("a", "b", "tie (bothbad)")]


def test_the_database_refuses_a_winner_outside_fastchats_four(tmp_path):
    store = VoteStore(tmp_path / "votes.sqlite")
    with pytest.raises(sqlite3.IntegrityError):
        store.record(Battle("a", "b", "a"), "p", "x", "y")
    assert store.battles() == []


def test_a_battle_is_anonymous_and_the_vote_reveals_the_models(arena):
    client, path = arena
    battle = client.post("/api/battle", json={"prompt": "hi"}).json()
    assert set(battle) == {"battle_id", "answer_a", "answer_b"}
    vote = client.post("/api/vote", json={"battle_id": battle["battle_id"],
                                          "winner": "model_b"})
    assert vote.status_code == 200
    revealed = vote.json()
    assert revealed["model_a"] != revealed["model_b"]
    assert battle["answer_a"] == f"{revealed['model_a']} answers hi"
    assert battle["answer_b"] == f"{revealed['model_b']} answers hi"
    # the acknowledged vote is in the file, read by a fresh connection
    db = sqlite3.connect(path)
    assert db.execute("SELECT model_a, model_b, winner, answer_a FROM votes").fetchall() == [
        (revealed["model_a"], revealed["model_b"], "model_b", battle["answer_a"])]
    db.close()


def test_pairs_are_distinct_and_take_both_seats(arena):
    client, _ = arena
    seen = set()
    for _ in range(40):
        battle = client.post("/api/battle", json={"prompt": "x"}).json()
        revealed = client.post("/api/vote", json={"battle_id": battle["battle_id"],
                                                  "winner": "tie"}).json()
        seen.add((revealed["model_a"], revealed["model_b"]))
    assert all(a != b for a, b in seen)
    assert len(seen) == 6  # every ordered pair of three models


def test_a_battle_takes_one_vote_and_bad_votes_are_refused(arena):
    client, path = arena
    battle_id = client.post("/api/battle", json={"prompt": "x"}).json()["battle_id"]
    assert client.post("/api/vote", json={"battle_id": battle_id,
                                          "winner": "a"}).status_code == 422
    assert client.post("/api/vote", json={"battle_id": battle_id,
                                          "winner": "model_a"}).status_code == 200
    again = client.post("/api/vote", json={"battle_id": battle_id, "winner": "model_b"})
    assert again.status_code == 404
    assert client.post("/api/vote", json={"battle_id": "made-up",
                                          "winner": "tie"}).status_code == 404
    assert client.post("/api/battle", json={"prompt": ""}).status_code == 422
    assert len(VoteStore(path).battles()) == 1


def test_the_leaderboard_rates_the_votes(arena):
    client, _ = arena
    assert client.get("/api/leaderboard").json() == {"ratings": [], "battles": 0}
    for _ in range(12):
        battle = client.post("/api/battle", json={"prompt": "x"}).json()
        # the stub answers name their model: alpha wins every battle it is in, others tie
        winner = ("model_a" if battle["answer_a"].startswith("alpha") else
                  "model_b" if battle["answer_b"].startswith("alpha") else "tie")
        client.post("/api/vote", json={"battle_id": battle["battle_id"], "winner": winner})
    board = client.get("/api/leaderboard").json()
    assert board["battles"] == 12
    assert board["ratings"][0]["model"] == "alpha"
    assert sorted(r["model"] for r in board["ratings"]) == sorted(NAMES)
    assert sum(r["battles"] for r in board["ratings"]) == 24


def test_the_pages_are_served_with_a_policy_that_loads_nothing_from_elsewhere(arena):
    client, _ = arena
    for page in ("/", "/leaderboard"):
        response = client.get(page)
        assert response.status_code == 200
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        assert "innerHTML" not in response.text and "http" not in response.text.replace(
            "http-equiv", "")


def test_ratings_command_reads_a_votes_database(tmp_path):
    path = tmp_path / "votes.sqlite"
    store = VoteStore(path)
    for _ in range(10):
        store.record(Battle("champ", "other", "model_a"), "p", "x", "y")
        store.record(Battle("other", "third", "tie"), "p", "x", "y")
    store.close()
    out = tmp_path / "ratings.json"
    subprocess.run([sys.executable, "-m", "evals", "ratings", "--battles", str(path),
                    "--json", str(out), "--bootstrap", "50", "--plot",
                    str(tmp_path / "r.png")], check=True, capture_output=True)
    report = json.loads(out.read_text())
    assert [r["model"] for r in report["ratings"]][0] == "champ"
    assert report["battles"] == 20
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


def test_ratings_command_refuses_a_bad_line_with_file_and_line(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"model_a": "x", "model_b": "y", "winner": "model_a"}\n{"model_a": "x"}\n')
    done = subprocess.run([sys.executable, "-m", "evals", "ratings", "--battles", str(path),
                           "--json", str(tmp_path / "r.json")], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {path}:2: ")
    assert not (tmp_path / "r.json").exists()


def test_a_file_that_is_not_a_votes_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(BattleError, match="not an arena votes database"):
        cli_arena.read_any_battles(path)


def test_model_names_come_from_the_flag_or_the_file_and_must_differ():
    assert cli_arena.model_names(["demo=/runs/a", "/m/smol.gguf", "/x/sft/"]) == {
        "demo": "/runs/a", "smol": "/m/smol.gguf", "sft": "/x/sft/"}
    with pytest.raises(ValueError, match="named 'a'"):
        cli_arena.model_names(["/1/a", "/2/a"])
    with pytest.raises(ValueError, match="at least two"):
        cli_arena.model_names(["/1/a"])


def test_arena_refuses_bad_inputs_before_creating_the_database(tmp_path):
    db = tmp_path / "votes.sqlite"
    missing = subprocess.run([sys.executable, "-m", "evals", "arena", "--model",
                              str(tmp_path / "no1"), "--model", str(tmp_path / "no2"),
                              "--db", str(db)], capture_output=True, text=True)
    assert missing.returncode == 2
    assert "could not load --model" in missing.stderr.splitlines()[-1]
    assert not db.exists()

    not_a_db = tmp_path / "notes.txt"
    not_a_db.write_text("my notes\n")
    refused = subprocess.run([sys.executable, "-m", "evals", "arena", "--model", "x=1",
                              "--model", "y=2", "--db", str(not_a_db)],
                             capture_output=True, text=True)
    assert refused.returncode == 2
    assert refused.stderr == f"error: {not_a_db} exists and is not a SQLite database; " \
                             "choose another --db\n"
    assert not_a_db.read_text() == "my notes\n"
