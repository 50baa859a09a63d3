"""The arena's votes in SQLite: one row a battle, each vote its own committed transaction.

WAL mode lets the leaderboard read while a vote is written; `synchronous=FULL` makes a commit
reach the disk before `record` returns, so a vote the server acknowledged survives a crash of
the process or of the machine.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from evals.ratings import WINNERS, Battle, BattleError

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS votes (
    id INTEGER PRIMARY KEY,
    tstamp REAL NOT NULL,
    model_a TEXT NOT NULL,
    model_b TEXT NOT NULL,
    winner TEXT NOT NULL CHECK (winner IN ({", ".join(repr(w) for w in WINNERS)})),
    prompt TEXT NOT NULL,
    answer_a TEXT NOT NULL,
    answer_b TEXT NOT NULL
)
"""


SQLITE_MAGIC = b"SQLite format 3\x00"


def is_sqlite(path) -> bool:
    """Whether the file starts with SQLite's header."""
    with open(path, "rb") as f:
        return f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC


def check_path(path) -> Path:
    """Refuses a votes path whose folder is missing, or an existing file that is not SQLite,
    before the arena spends minutes loading models; creates nothing."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"the folder of {path} does not exist; create it first")
    if path.exists() and path.stat().st_size and not is_sqlite(path):
        raise BattleError(f"{path} exists and is not a SQLite database; choose another --db")
    return path


class VoteStore:
    """An open votes database; safe to share between threads (one connection, one lock)."""

    def __init__(self, path):
        self.path = check_path(path)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as e:
            self._db.close()
            raise BattleError(f"{self.path}: not an arena votes database ({e})") from None

    def record(self, battle: Battle, prompt: str, answer_a: str, answer_b: str) -> int:
        """Writes one vote and commits it before returning its row id."""
        with self._lock, self._db:  # the connection as a context manager: BEGIN ... COMMIT
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                "INSERT INTO votes (tstamp, model_a, model_b, winner, prompt, answer_a, "
                "answer_b) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (time.time(), battle.model_a, battle.model_b, battle.winner, prompt,
                 answer_a, answer_b))
            return cursor.lastrowid

    def battles(self) -> list[Battle]:
        """Every vote, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT model_a, model_b, winner FROM votes ORDER BY id").fetchall()
        return [Battle(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_battles(path) -> list[Battle]:
    """The battles of a votes database that must already exist (for `python -m evals
    ratings`); opening it read-only, so a mistyped path does not create an empty database."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such votes database")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            rows = db.execute("SELECT model_a, model_b, winner FROM votes ORDER BY id").fetchall()
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise BattleError(f"{path}: not an arena votes database ({e})") from None
    if not rows:
        raise BattleError(f"{path}: no votes yet")
    return [Battle(*row) for row in rows]
