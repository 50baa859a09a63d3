"""Tool calls in the server's replies, the way OpenAI clients expect them.

With `tools` in a request, the server does not run the tool: as OpenAI's API does, it returns
the model's call (`message.tool_calls`, finish_reason "tool_calls") and the client runs it and
sends the result back as a `tool` message. So the generation stops where the model closes its
call: the closing marker is a stop string, and the text the engine returns (cut before it) is
split here into content and the call.

A call is the model's own format (infer.tools.session reads the same two):
- twofiles tokenizers: `<|tool_call_start|>{"name": ..., "arguments": {...}}<|tool_call_end|>`
  (special tokens, which decode to those strings);
- chat templates (ChatML, SmolLM2, Qwen): `<tool_call>\\n{json}\\n</tool_call>` as text.

Text that only looks like a call (an open marker whose JSON is not a call) stays content.
"""

from __future__ import annotations

import dataclasses
import json
import secrets

from infer.chat.template import is_twofiles_tokenizer


@dataclasses.dataclass(frozen=True)
class Markers:
    open: str
    close: str


TWOFILES = Markers("<|tool_call_start|>", "<|tool_call_end|>")
TEXT = Markers("<tool_call>", "</tool_call>")


def markers(model) -> Markers:
    """The call markers of the model's chat format."""
    twofiles = model.chat_template is None and is_twofiles_tokenizer(model.tokenizer)
    return TWOFILES if twofiles else TEXT


def split(text: str, marks: Markers) -> tuple[str | None, list[dict]]:
    """(content, calls) of a reply whose generation stopped at `marks.close`: the text before
    the first call and the call in OpenAI's shape, or (text, []) when there is no valid call.
    Content that is empty beside a call is None, as OpenAI sends it."""
    start = text.find(marks.open)
    if start < 0:
        return text, []
    call = _call(text[start + len(marks.open):])
    if call is None:
        return text, []
    content = text[:start].rstrip("\n") if marks is TEXT else text[:start]
    return content or None, [call]


def _call(body: str) -> dict | None:
    try:
        parsed = json.loads(body)
    except json.JSONDecodeError:
        return None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("name"), str):
        return None
    arguments = parsed.get("arguments", {})
    if isinstance(arguments, str):  # some models write the arguments' JSON as a string
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {"id": f"call_{secrets.token_hex(12)}", "type": "function",
            "function": {"name": parsed["name"], "arguments": json.dumps(arguments)}}


class ContentStream:
    """Streamed text with the calls held back: `feed(delta)` returns the content that may be
    sent now; text that could be the start of a call waits, and after an open marker nothing
    more is content until `finish` has the whole reply."""

    def __init__(self, marks: Markers):
        self.marks = marks
        self.text = ""
        self.sent = 0

    def feed(self, delta: str) -> str:
        self.text += delta
        start = self.text.find(self.marks.open)
        end = start if start >= 0 else len(self.text) - _partial(self.text, self.marks.open)
        if self.marks is TEXT:  # the newline before a text call belongs to the call
            while end > self.sent and self.text[end - 1] == "\n":
                end -= 1
        out = self.text[self.sent:max(end, self.sent)]
        self.sent = max(end, self.sent)
        return out

    def finish(self, text: str) -> tuple[str, list[dict]]:
        """(content not sent yet, calls) once the reply is `text`."""
        content, calls = split(text, self.marks)
        rest = (content or "")[self.sent:]
        return rest, calls


def _partial(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if text.endswith(marker[:n]):
            return n
    return 0
