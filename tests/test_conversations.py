"""The conversation file: every bad line is refused with FILE:LINE, good files round-trip."""

from __future__ import annotations

import json

import pytest

from train.datasets import conversations as conv
from train.datasets.conversations import ConversationError

GOOD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}


def _call(call_id="call_0", arguments='{"expression": "2 + 2"}'):
    return {"id": call_id, "type": "function",
            "function": {"name": "calculator", "arguments": arguments}}


TOOL_TURN = [{"role": "user", "content": "What is 2 + 2?"},
             {"role": "assistant", "content": None, "tool_calls": [_call()]},
             {"role": "tool", "tool_call_id": "call_0", "content": "4"},
             {"role": "assistant", "content": "2 + 2 = 4."}]

U, A = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}

# (bad line as written in the file, words the error must contain)
BAD_LINES = {
    "not json": ('{"messages": [', "not JSON"),
    "no messages": (json.dumps({"msgs": [U, A]}), '{"messages": [...]}'),
    "not an object": (json.dumps([U, A]), '{"messages": [...]}'),
    "empty conversation": (json.dumps({"messages": []}), "non-empty"),
    "unknown role": (json.dumps({"messages": [{"role": "bot", "content": "x"}, A]}), "role 'bot'"),
    "content not a string": (json.dumps({"messages": [{"role": "user", "content": 5}, A]}),
                             "content must be a str"),
    "content missing": (json.dumps({"messages": [{"role": "user"}, A]}),
                        "a user message needs 'content'"),
    "unknown key": (json.dumps({"messages": [{"role": "user", "contnet": "x", "content": "y"}, A]}),
                    "unknown key(s) ['contnet']"),
    "tool without a call": (json.dumps({"messages": [U, A, {"role": "tool", "tool_call_id": "c1",
                                                            "content": "4"}]}),
                            "answers no call"),
    "tool answering a call twice": (json.dumps({"messages": TOOL_TURN[:3] + [TOOL_TURN[2]]
                                                + TOOL_TURN[3:]}), "answers no call"),
    "call left unanswered": (json.dumps({"messages": TOOL_TURN[:2] + TOOL_TURN[3:]}),
                             "call_0 of the assistant message before it have no tool answer"),
    "arguments not JSON": (json.dumps({"messages": [U, {"role": "assistant", "content": "",
                                                        "tool_calls": [_call(arguments="2+2")]}]}),
                           "'arguments' is not JSON"),
    "arguments not a string": (json.dumps({"messages": [U, {"role": "assistant", "tool_calls": [
        _call(arguments={"expression": "2 + 2"})]}]}), "'arguments' must be a JSON object as a str"),
    "call not OpenAI-shaped": (json.dumps({"messages": [U, {"role": "assistant", "tool_calls": [
        {"name": "calculator", "arguments": "{}"}]}]}), "expected {'id', 'type': 'function'"),
    "call without an id": (json.dumps({"messages": [U, {"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "calculator", "arguments": "{}"}}]}]}),
        "needs an 'id'"),
    "call id used twice": (json.dumps({"messages": [U, {"role": "assistant", "tool_calls": [
        _call(), _call()]}]}), "id 'call_0' is used twice"),
    "extra key in a call": (json.dumps({"messages": [U, {"role": "assistant", "tool_calls": [
        {**_call(), "index": 0}]}]}), "expected {'id', 'type': 'function'"),
    "system not first": (json.dumps({"messages": [U, {"role": "system", "content": "s"}, A]}),
                         "system message may only come first"),
    "no assistant turn": (json.dumps({"messages": [{"role": "system", "content": "s"}, U]}),
                          "no assistant message"),
}


@pytest.mark.parametrize("case", BAD_LINES)
def test_bad_line_is_refused_with_file_and_line(tmp_path, case):
    bad, words = BAD_LINES[case]
    path = tmp_path / "chat.jsonl"
    # line 1 good, line 2 blank (skipped but counted), line 3 bad, line 4 good
    path.write_text(json.dumps(GOOD) + "\n\n" + bad + "\n" + json.dumps(GOOD) + "\n")
    with pytest.raises(ConversationError) as e:
        conv.read(path)
    assert str(e.value).startswith(f"{path}:3: "), str(e.value)
    assert words in str(e.value)


def test_missing_and_empty_files_are_refused(tmp_path):
    with pytest.raises(ConversationError, match="no such conversation file"):
        conv.read(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(ConversationError, match="holds no conversations"):
        conv.read(tmp_path / "empty.jsonl")


def test_tool_conversation_round_trips_with_null_content_as_empty(tmp_path):
    path = tmp_path / "out.jsonl"
    assert conv.write(path, [TOOL_TURN, GOOD["messages"]]) == 2
    back = conv.read(path)
    assert back[1] == GOOD["messages"]
    assert back[0][1]["content"] == ""  # OpenAI's null beside tool calls
    assert back[0][1]["tool_calls"] == TOOL_TURN[1]["tool_calls"]
    assert [m["role"] for m in back[0]] == ["user", "assistant", "tool", "assistant"]


def test_lines_other_keys_are_ignored_and_unicode_is_kept(tmp_path):
    path = tmp_path / "chat.jsonl"
    msgs = [{"role": "system", "content": "Sé breve."},
            {"role": "user", "content": "¿Quién eres?"},
            {"role": "assistant", "content": "Soy Quill. 🙂"}]
    path.write_text(json.dumps({"id": 7, "messages": msgs}, ensure_ascii=False) + "\n",
                    encoding="utf-8")
    assert conv.read(path) == [msgs]


def test_write_refuses_existing_file_unless_forced(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text("keep me\n")
    with pytest.raises(ConversationError, match="exists.*--force"):
        conv.write(path, [GOOD["messages"]])
    assert path.read_text() == "keep me\n"
    conv.write(path, [GOOD["messages"]], force=True)
    assert conv.read(path) == [GOOD["messages"]]


def test_write_refuses_a_bad_conversation_before_writing_anything(tmp_path):
    path = tmp_path / "out.jsonl"
    with pytest.raises(ConversationError, match="conversation 1 .*no assistant message"):
        conv.write(path, [GOOD["messages"], [U]])
    assert list(tmp_path.iterdir()) == []  # no file, no temp file


def test_every_conversation_training_accepts_the_renderer_renders():
    """One definition of a message: what the data check lets through (OpenAI's optional "name"
    included) renders for SFT instead of failing later inside the trainer."""
    from infer.chat import render as chat
    from tests.test_chat_render import byte_twofiles
    named = [{"role": "system", "content": "s", "name": "policy"},
             {"role": "user", "content": "hi", "name": "ada"},
             {"role": "assistant", "content": "hello", "name": "quill"}]
    for messages in (conv.check(named), conv.check(TOOL_TURN)):
        ids, mask = chat.render(byte_twofiles(), messages)
        assert len(ids) == len(mask) and sum(mask) > 0
