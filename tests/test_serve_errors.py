"""Every refusal has its HTTP status and OpenAI's error shape; random bodies never give a 500."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from infer.serve.worker import Worker
from tests.serve_server import running
from tests.test_export_common import tiny_twofiles_model

CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}


@pytest.fixture(scope="module")
def model():
    return tiny_twofiles_model()


@pytest.fixture(scope="module")
def url(model):
    with running(Worker({"tiny": model}), max_body_bytes=4096) as base:
        yield base


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["message"]
    return body["error"]


def post(url, body, path="/v1/chat/completions", **kwargs):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url + path, content=content, timeout=30, **kwargs)


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b'"text"'])
def test_malformed_json_is_a_400(url, body):
    error_of(post(url, body), 400)


@pytest.mark.parametrize("field, value", [
    ("temperature", "hot"), ("max_tokens", 1.5), ("max_tokens", True), ("max_tokens", 0),
    ("top_p", 0), ("stream", "yes"), ("stop", 3), ("messages", "hi"), ("seed", "1"),
    ("temperature", 5),
])
def test_wrong_type_or_range_is_a_400_naming_the_field(url, field, value):
    assert error_of(post(url, {**CHAT, field: value}), 400)["param"] == field


@pytest.mark.parametrize("field, value", [
    ("n", 2), ("logit_bias", {"5": 10}), ("logprobs", True), ("top_logprobs", 3),
    ("presence_penalty", 0.5), ("tools", [{"type": "function", "function": {"name": "f"}}]),
    ("tool_choice", "auto"), ("response_format", {"type": "json_object"}),
])
def test_unsupported_field_is_a_400_naming_it(url, field, value):
    error = error_of(post(url, {**CHAT, field: value}), 400)
    assert error["param"] == field and "not supported" in error["message"]


def test_unknown_field_and_bad_message_are_400s(url):
    assert "frobnicate" in error_of(post(url, {**CHAT, "frobnicate": 1}), 400)["message"]
    bad_role = {**CHAT, "messages": [{"role": "wizard", "content": "x"}]}
    assert error_of(post(url, bad_role), 400)["param"] == "messages"
    late_system = {**CHAT, "messages": [{"role": "user", "content": "a"},
                                        {"role": "system", "content": "b"}]}
    assert "system" in error_of(post(url, late_system), 400)["message"]


def test_prompt_longer_than_the_context_is_a_400(url):
    long = {**CHAT, "messages": [{"role": "user", "content": "word " * 300}]}
    assert error_of(post(url, long), 400)["code"] == "context_length_exceeded"
    too_many = {**CHAT, "max_tokens": 500}
    assert error_of(post(url, too_many), 400)["param"] == "max_tokens"
    long_prompt = {"model": "tiny", "prompt": "word " * 300}
    assert error_of(post(url, long_prompt, "/v1/completions"), 400)["param"] == "prompt"


def test_body_over_the_limit_is_a_413(url):
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert error_of(post(url, big), 413)["code"] == "request_too_large"


def test_unknown_model_and_path_are_404s(url):
    assert error_of(post(url, {**CHAT, "model": "nope"}), 404)["param"] == "model"
    error_of(httpx.get(url + "/v1/nothing-here"), 404)


def test_api_key_is_required_when_set(model):
    with running(Worker({"tiny": model}), api_key="s3cret") as base:
        error_of(post(base, CHAT), 401)
        error_of(post(base, CHAT, headers={"Authorization": "Bearer wrong"}), 401)
        error_of(httpx.get(base + "/v1/models"), 401)
        good = post(base, CHAT, headers={"Authorization": "Bearer s3cret"})
        assert good.status_code == 200 and good.json()["choices"][0]["message"]["role"]
        assert httpx.get(base + "/health").status_code == 200


def _wait_for(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_past_the_queue_limit_is_a_429_with_retry_after(model):
    """With the engine thread not started, one request fills a queue of one."""
    worker = Worker({"tiny": model}, max_queue=1)
    with running(worker, start_worker=False) as base, httpx.Client(timeout=30) as http:
        with http.stream("POST", base + "/v1/chat/completions",
                         json={**CHAT, "stream": True}) as waiting:
            assert waiting.status_code == 200
            busy = post(base, CHAT)
            assert error_of(busy, 429)["code"] == "queue_full"
            assert int(busy.headers["retry-after"]) >= 1
            assert http.get(base + "/health").json()["queued"] == 1
        # The client has gone: its request no longer waits, and the queue has room again.
        _wait_for(lambda: http.get(base + "/health").json()["queued"] == 0)


def test_a_disconnected_stream_stops_its_generation(model):
    """A client that reads one chunk and leaves: its batch stops, the next request runs."""
    worker = Worker({"tiny": model})
    started = []
    run = worker._run

    def recording_run(batch):
        started.append(batch[0])
        run(batch)

    worker._run = recording_run
    with running(worker) as base, httpx.Client(timeout=30) as http:
        with http.stream("POST", base + "/v1/completions",
                         json={"model": "tiny", "prompt": "a", "max_tokens": 120,
                               "stream": True}) as s:
            next(s.iter_lines())
        _wait_for(lambda: started and started[0].cancelled.is_set())
        after = post(base, {"model": "tiny", "prompt": "b", "max_tokens": 2}, "/v1/completions")
        assert after.status_code == 200
        items = []
        while not started[0].out.empty():
            items.append(started[0].out.get_nowait()[0])
        assert "done" not in items and items.count("delta") < 119


def test_an_engine_failure_is_a_logged_500_and_the_next_request_runs(model, caplog):
    """A step that raises fails the requests it was running (500, the cause in the server's
    log with its traceback); the worker builds a fresh engine and serves the next one."""
    worker = Worker({"tiny": model})
    broken = worker.engines["tiny"]

    def failing_step():
        raise RuntimeError("the cache is gone")

    broken.step = failing_step
    with running(worker) as base, caplog.at_level("ERROR", logger="infer.serve.worker"):
        failed = post(base, CHAT)
        assert "generation failed: the cache is gone" in error_of(failed, 500)["message"]
        assert post(base, CHAT).status_code == 200
    assert worker.engines["tiny"] is not broken
    [record] = [r for r in caplog.records if r.name == "infer.serve.worker"]
    assert record.exc_info and "the cache is gone" in str(record.exc_info[1])


def test_no_cross_origin_access_unless_asked(url, model):
    origin = {"Origin": "http://evil.example"}
    assert "access-control-allow-origin" not in httpx.get(url + "/v1/models",
                                                          headers=origin).headers
    with running(Worker({"tiny": model}), cors_origin="http://ok.example") as base:
        ok = httpx.get(base + "/v1/models", headers={"Origin": "http://ok.example"})
        assert ok.headers["access-control-allow-origin"] == "http://ok.example"
        evil = httpx.get(base + "/v1/models", headers=origin)
        assert "access-control-allow-origin" not in evil.headers


_json = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.floats(-3, 3)
                     | st.text(max_size=8),
                     lambda inner: st.lists(inner, max_size=3)
                     | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
_fields = st.sampled_from(["model", "messages", "prompt", "max_tokens", "temperature", "top_p",
                           "seed", "stop", "stream", "stream_options", "n", "tools", "user",
                           "max_completion_tokens", "logprobs", "content", "role",
                           "tool_choice", "parallel_tool_calls"])
# Tool definitions and tool-call messages near the valid shapes, where parsing is deepest.
_tool_fields = st.fixed_dictionaries({"type": st.sampled_from(["function", "x"]), "function":
                                      st.dictionaries(st.sampled_from(["name", "parameters",
                                                                       "arguments"]),
                                                      st.sampled_from(["calculator", "f", "{}",
                                                                       {}, None]), max_size=3)})
_tool_messages = st.fixed_dictionaries(
    {"role": st.sampled_from(["assistant", "tool"])},
    optional={"content": st.none() | st.text(max_size=6), "tool_call_id": st.text(max_size=4),
              "tool_calls": st.lists(st.fixed_dictionaries({"id": st.text(max_size=3)},
                                                           optional={"function": _tool_fields}),
                                     max_size=2)})


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.dictionaries(_fields, _json, max_size=4), drop=st.booleans(),
       path=st.sampled_from(["/v1/chat/completions", "/v1/completions"]),
       raw=st.one_of(st.none(), st.binary(max_size=40)),
       tools=st.none() | st.lists(_tool_fields, max_size=2),
       history=st.lists(_tool_messages, max_size=2))
def test_random_bodies_never_give_a_500(url, changes, drop, path, raw, tools, history):
    base = dict(CHAT) if path.endswith("chat/completions") else {"model": "tiny", "prompt": "x",
                                                                  "max_tokens": 2}
    if path.endswith("chat/completions"):
        base["messages"] = base["messages"] + history
        if tools is not None:
            base["tools"] = tools
    body = raw if raw is not None else ({} if drop else base) | changes
    if isinstance(body, dict) and isinstance(body.get("max_tokens"), int):
        body["max_tokens"] = min(body["max_tokens"], 4)  # keep generation short
    response = post(url, body, path)
    assert response.status_code < 500, response.text
    if response.status_code != 200:
        error_of(response, response.status_code)
