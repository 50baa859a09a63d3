"""The arena's web application: the battle page, the vote endpoint and the leaderboard.

    app = create_app({"demo": answer_fn, "smollm2": answer_fn2}, VoteStore("votes.sqlite"))
    uvicorn.run(app, host="127.0.0.1", port=8001)

An answer function takes the prompt and returns the model's reply; they run one at a time on a
single worker thread (the engine is not meant to be entered from several threads at once), so
the event loop keeps serving pages and votes while models generate. Models stay anonymous until
the vote: the battle response holds only the two answers, the vote response reveals the names.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import random
import secrets
import threading
from pathlib import Path
from typing import Callable, Literal, Mapping

import fastapi
import pydantic
from fastapi.responses import HTMLResponse, JSONResponse

from evals import ratings
from evals.arena.votes import VoteStore

MAX_PROMPT_CHARS = 4000
MAX_PENDING = 1000  # battles shown but not yet voted on; the oldest are forgotten past this
_PAGES = Path(__file__).parent
# The pages load nothing from anywhere, not even from this server: inline script and style
# only, and requests back to this origin.
_CSP = ("default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
        "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'")


class BattleRequest(pydantic.BaseModel):
    prompt: str = pydantic.Field(min_length=1, max_length=MAX_PROMPT_CHARS)


class VoteRequest(pydantic.BaseModel):
    battle_id: str
    winner: Literal["model_a", "model_b", "tie", "tie (bothbad)"]


class _Pending:
    """Battles awaiting a vote, by id: (model_a, model_b, prompt, answer_a, answer_b)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: collections.OrderedDict[str, tuple] = collections.OrderedDict()

    def add(self, item: tuple) -> str:
        battle_id = secrets.token_urlsafe(12)
        with self._lock:
            self._items[battle_id] = item
            while len(self._items) > MAX_PENDING:
                self._items.popitem(last=False)
        return battle_id

    def pop(self, battle_id: str) -> tuple | None:
        with self._lock:
            return self._items.pop(battle_id, None)


def _page(name: str) -> HTMLResponse:
    return HTMLResponse((_PAGES / name).read_text(encoding="utf-8"),
                        headers={"Content-Security-Policy": _CSP,
                                 "X-Content-Type-Options": "nosniff"})


def leaderboard(store: VoteStore, bootstrap: int) -> dict:
    """The ratings JSON of every vote so far (an empty table before the first)."""
    battles = store.battles()
    if not battles:
        return {"ratings": [], "battles": 0}
    return {**ratings.rate(battles, bootstrap=bootstrap).to_json(), "battles": len(battles)}


def create_app(answerers: Mapping[str, Callable[[str], str]], store: VoteStore, *,
               rng: random.Random | None = None, bootstrap: int = 200) -> fastapi.FastAPI:
    """The arena over `answerers` (model name -> answer function; at least two)."""
    if len(answerers) < 2:
        raise ValueError(f"the arena needs at least two models, got {len(answerers)}")
    names = sorted(answerers)
    rng = rng or random.Random()
    pending = _Pending()
    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="arena")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        worker.shutdown(wait=False, cancel_futures=True)

    app = fastapi.FastAPI(title="twofiles arena", docs_url=None, redoc_url=None,
                          openapi_url=None, lifespan=lifespan)

    def answer_both(model_a: str, model_b: str, prompt: str) -> tuple[str, str]:
        return answerers[model_a](prompt), answerers[model_b](prompt)

    @app.get("/", response_class=HTMLResponse)
    def arena_page():
        return _page("page.html")

    @app.get("/leaderboard", response_class=HTMLResponse)
    def leaderboard_page():
        return _page("leaderboard.html")

    @app.get("/health")
    def health():
        return {"status": "ok", "models": len(names)}

    @app.post("/api/battle")
    async def battle(request: BattleRequest):
        model_a, model_b = rng.sample(names, 2)  # distinct, and in random seats
        future = worker.submit(answer_both, model_a, model_b, request.prompt)
        try:
            answer_a, answer_b = await asyncio.wrap_future(future)
        except ValueError as e:  # e.g. a prompt longer than a model's context
            return JSONResponse({"error": str(e)}, status_code=400)
        battle_id = pending.add((model_a, model_b, request.prompt, answer_a, answer_b))
        return {"battle_id": battle_id, "answer_a": answer_a, "answer_b": answer_b}

    @app.post("/api/vote")
    def vote(request: VoteRequest):
        item = pending.pop(request.battle_id)
        if item is None:
            return JSONResponse({"error": "no such battle, or it was voted on already; "
                                          "start a new one"}, status_code=404)
        model_a, model_b, prompt, answer_a, answer_b = item
        # Committed to disk before the reply: an acknowledged vote is never lost.
        vote_id = store.record(ratings.Battle(model_a, model_b, request.winner), prompt,
                               answer_a, answer_b)
        return {"vote_id": vote_id, "model_a": model_a, "model_b": model_b,
                "winner": request.winner}

    @app.get("/api/leaderboard")
    def leaderboard_json():
        return leaderboard(store, bootstrap)
    return app
