"""Tools through the server with the official `openai` client: the model's calculator call comes
back as OpenAI's `tool_calls` (whole and streamed), the client's tool message is read back, and
tools the server does not run are refused."""

from __future__ import annotations

import dataclasses
import json

import jax
import numpy as np
import openai
import pytest

import model as model_lib
from infer.chat import render
from infer.formats import tokenizer_file
from infer.load_model import Model, twofiles_fields
from infer.serve import tool_calls
from infer.serve.worker import Worker
from infer.tools import SCHEMAS
from tests.serve_server import running

CALL = {"name": "calculator", "arguments": {"expression": "6*7"}}
CALL_TEXT = json.dumps(CALL)
QUESTION = [{"role": "user", "content": "What is 6*7?"}]
CALCULATOR = [SCHEMAS["calculator"]]


def caller_model() -> Model:
    """A model that answers every chat turn with one calculator call, by construction.

    Its blocks write nothing (zero attention-out and MLP-down matrices), so the logits depend on
    the current token only: a bigram table in the unembedding, one-hot embeddings in a width of
    the vocabulary's size. The table sends <|assistant_start|> -> <|tool_call_start|> -> the
    call's JSON (one token of its own) -> <|tool_call_end|> -> <|assistant_end|>, and every
    other token to <|assistant_end|>.
    """
    ranks = {bytes([i]): i for i in range(256)} | {CALL_TEXT.encode(): 256}
    enc = tokenizer_file.encoding(ranks)
    V = enc.n_vocab
    D = -(-V // 8) * 8  # head_dim = D / 4 must be even (rotary)
    cfg = dataclasses.replace(model_lib.preset("tiny"), vocab_size=V, d_model=D, n_layers=1,
                              n_heads=4, n_kv_heads=2, d_ff=32, tie_embeddings=False,
                              max_seq_len=256)
    params = jax.tree.map(np.asarray, model_lib.init(cfg, jax.random.key(0)))
    params["layers"]["wo"] = np.zeros_like(params["layers"]["wo"])
    params["layers"]["w_down"] = np.zeros_like(params["layers"]["w_down"])
    params["embed"] = np.eye(V, D, dtype=np.float32)
    special = enc.encode_single_token
    chain = [special("<|assistant_start|>"), special("<|tool_call_start|>"), 256,
             special("<|tool_call_end|>")]
    successor = np.full(V, special("<|assistant_end|>"))
    successor[chain] = chain[1:] + [special("<|assistant_end|>")]
    unembed = np.zeros((D, V), np.float32)
    unembed[np.arange(V), successor] = 10.0
    params["unembed"] = unembed
    return Model(source="caller", kind="twofiles", **twofiles_fields(cfg, params, enc))


@pytest.fixture(scope="module")
def caller():
    return caller_model()


@pytest.fixture(scope="module")
def client(caller):
    with running(Worker({"caller": caller})) as url:
        yield openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)


def test_a_call_comes_back_as_openai_tool_calls(client):
    reply = client.chat.completions.create(model="caller", messages=QUESTION, tools=CALCULATOR,
                                           max_tokens=16, temperature=0)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "calculator"
    assert json.loads(call.function.arguments) == {"expression": "6*7"}


def test_a_streamed_call_is_one_tool_calls_delta_and_no_content(client):
    chunks = list(client.chat.completions.create(model="caller", messages=QUESTION, max_tokens=16,
                                                 tools=CALCULATOR, temperature=0, stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    calls = [t for c in chunks for t in (c.choices[0].delta.tool_calls or [])]
    assert content == ""
    assert [(t.index, t.function.name, json.loads(t.function.arguments)) for t in calls] == [
        (0, "calculator", {"expression": "6*7"})]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_without_tools_the_call_is_plain_content(client):
    """No tools (or tool_choice "none"): nothing is parsed, the model's text is the reply."""
    expected = f"<|tool_call_start|>{CALL_TEXT}<|tool_call_end|>"
    for extra in ({}, {"tools": CALCULATOR, "tool_choice": "none"}):
        reply = client.chat.completions.create(model="caller", messages=QUESTION, max_tokens=16,
                                               temperature=0, **extra)
        assert reply.choices[0].message.content == expected
        assert reply.choices[0].finish_reason == "stop"
        assert reply.choices[0].message.tool_calls is None


def test_the_clients_tool_message_goes_into_the_prompt(client, caller):
    first = client.chat.completions.create(model="caller", messages=QUESTION, tools=CALCULATOR,
                                           max_tokens=16, temperature=0).choices[0].message
    call = first.tool_calls[0]
    conversation = QUESTION + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": "calculator", "arguments": call.function.arguments}}]},
        {"role": "tool", "tool_call_id": call.id, "content": "42"}]
    again = client.chat.completions.create(model="caller", messages=conversation, max_tokens=16,
                                           tools=CALCULATOR, temperature=0)
    assert again.usage.prompt_tokens == len(render.prompt_ids(caller, conversation))
    # The turn shows the call and the result as the twofiles layout writes them.
    ids = render.prompt_ids(caller, conversation)
    assert caller.tokenizer.decode(ids).endswith(
        f"<|assistant_start|><|tool_call_start|>{{\"name\": \"calculator\", \"arguments\": "
        f"{call.function.arguments}}}<|tool_call_end|><|assistant_end|>"
        "<|tool_output_start|>42<|tool_output_end|><|assistant_start|>")


@pytest.mark.parametrize("tools, tool_choice, param, words", [
    ([{"type": "function", "function": {"name": "get_weather"}}], None, "tools",
     ["get_weather", "calculator", "not supported"]),
    ([{"type": "function", "function": {"name": "calculator", "parameters": {
        "type": "object", "properties": {"x": {"type": "number"}}}}}], None, "tools",
     ["expression", "x"]),
    (CALCULATOR, "required", "tool_choice", ["required", "not supported"]),
    (CALCULATOR, {"type": "function", "function": {"name": "calculator"}}, "tool_choice",
     ["not supported"]),
    (None, "auto", "tool_choice", ["without tools"]),
])
def test_tools_the_server_does_not_run_are_400s_naming_them(client, tools, tool_choice, param,
                                                           words):
    extra = {"tools": tools} if tools else {}
    if tool_choice is not None:
        extra["tool_choice"] = tool_choice
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="caller", messages=QUESTION, **extra)
    assert e.value.param == param
    assert all(w in e.value.message for w in words), e.value.message


@pytest.mark.parametrize("text, content, arguments", [
    # SmolLM2 / Qwen's text calls, cut before </tool_call> by the stop string
    ('Let me compute.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "2+2"}}\n',
     "Let me compute.", {"expression": "2+2"}),
    ('<tool_call>\n{"name": "calculator", "arguments": "{\\"expression\\": \\"1\\"}"}\n', None,
     {"expression": "1"}),
    ("<tool_call>\n{not json\n", "<tool_call>\n{not json\n", None),
    ("no call here", "no call here", None),
])
def test_text_calls_split_into_content_and_the_call(text, content, arguments):
    got_content, calls = tool_calls.split(text, tool_calls.TEXT)
    assert got_content == content
    assert [json.loads(c["function"]["arguments"]) for c in calls] == (
        [arguments] if arguments else [])


def test_streamed_content_never_shows_part_of_a_call():
    text = 'Sure.\n<tool_call>\n{"name": "calculator", "arguments": {"expression": "3"}}\n'
    stream = tool_calls.ContentStream(tool_calls.TEXT)
    sent = "".join(stream.feed(ch) for ch in text)  # one character at a time
    rest, calls = stream.finish(text)
    assert sent + rest == "Sure." and len(calls) == 1
    plain = tool_calls.ContentStream(tool_calls.TEXT)
    sent = "".join(plain.feed(ch) for ch in "a <tool\nb\n")
    assert sent + plain.finish("a <tool\nb\n")[0] == "a <tool\nb\n"
