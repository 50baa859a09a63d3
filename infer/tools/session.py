"""Tool calls in a running generation: find a row's call, run it, and say what to force next.

`ToolRunner(model, conversations, ["calculator"])` is what `infer.runtime.engine` takes as
`tools=`. The engine returns to it whenever a row samples one of `pause_ids`; `after(row, ids)`
looks for a finished call in the model's own format since the row's last tool output:

- twofiles tokenizers: `<|tool_call_start|>{"name": ..., "arguments": {...}}<|tool_call_end|>`
  (special tokens, so it pauses on `<|tool_call_end|>` only);
- chat templates (ChatML, SmolLM2, Qwen): `<tool_call>\\n{json}\\n</tool_call>` as text, so it
  pauses on every token containing ">" and checks the text.

It runs the tool and returns the ids the chat template writes after the call for a tool message
holding the result: the conversation with the assistant's call and the tool message appended,
rendered with the generation prompt, minus everything up to the token that closes the
assistant's turn (its rendering of the call may differ from the model's own tokens, so only what
follows is forced). The row then writes the next assistant turn.
"""

from __future__ import annotations

import json
import re
from typing import Sequence

from infer.chat import render as chat_render
from infer.chat.template import ChatTemplateError, is_twofiles_tokenizer
from infer.tools import call_tool, check_names

# OpenAI's rule for function names (a message with another name would not render).
_VALID_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_TEXT_CALL = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)


class ToolRunner:
    """Runs the tool calls of a batch of chat rows; `calls[row]` records each call made."""

    def __init__(self, model, conversations: Sequence[list[dict]], names: Sequence[str]):
        check_names(list(names))
        self.model = model
        self.names = list(names)
        self.enc = model.tokenizer
        self.history = [list(c) for c in conversations]
        self.segment_start = [0] * len(conversations)  # where the row's current turn begins
        self.calls: list[list[dict]] = [[] for _ in conversations]
        self.twofiles = model.chat_template is None and is_twofiles_tokenizer(self.enc)
        if self.twofiles:
            self.call_start = self.enc.encode_single_token("<|tool_call_start|>")
            self.call_end = self.enc.encode_single_token("<|tool_call_end|>")
            self.pause_ids = [self.call_end]
        else:
            self.pause_ids = [i for i in range(self.enc.n_vocab) if _has_gt(self.enc, i)]

    def after(self, row: int, token_ids: list[int]) -> list[int]:
        """Ids to force into `row` after its generated `token_ids`: a tool's output as the
        template renders it, or [] when the row has not just finished a call."""
        segment = token_ids[self.segment_start[row]:]
        found = self._twofiles_call(segment) if self.twofiles else self._text_call(segment)
        if found is None:
            return []
        content, call_json = found
        name, arguments, result = self._run(call_json)
        self.calls[row].append({"name": name, "arguments": arguments, "result": result})
        call_id = f"call_{len(self.calls[row])}"
        shown_name = name if _VALID_NAME.fullmatch(name) else "invalid_tool_name"
        shown_arguments = json.dumps(arguments if isinstance(arguments, dict) else {})
        assistant = {"role": "assistant", "content": content or None, "tool_calls": [{
            "id": call_id, "type": "function",
            "function": {"name": shown_name, "arguments": shown_arguments}}]}
        tool = {"role": "tool", "content": result, "tool_call_id": call_id, "name": shown_name}
        forced = self._forced_ids(self.history[row] + [assistant], tool)
        self.history[row] += [assistant, tool]
        self.segment_start[row] = len(token_ids) + len(forced)
        return forced

    def conversation(self, row: int, token_ids: list[int]) -> list[dict]:
        """The row's conversation once it has finished with `token_ids` (its completion): the
        prompt's messages, each tool call with its tool message, and the final answer."""
        final = self.enc.decode(token_ids[self.segment_start[row]:])
        return self.history[row] + [{"role": "assistant", "content": final}]

    def _twofiles_call(self, segment: list[int]) -> tuple[str, str] | None:
        if not segment or segment[-1] != self.call_end or self.call_start not in segment:
            return None
        start = len(segment) - 1 - segment[::-1].index(self.call_start)
        return self.enc.decode(segment[:start]), self.enc.decode(segment[start + 1:-1])

    def _text_call(self, segment: list[int]) -> tuple[str, str] | None:
        text = self.enc.decode(segment)
        match = _TEXT_CALL.search(text)
        if match is None:
            return None
        return text[:match.start()].rstrip("\n"), match.group(1)

    def _run(self, call_json: str) -> tuple[str, object, str]:
        """(name, arguments, result) of the call's JSON text; a bad call gets an error result
        the model can read and correct."""
        try:
            call = json.loads(call_json)
        except json.JSONDecodeError as e:
            return "", call_json, f'error: the tool call is not JSON ({e.msg}); write ' \
                                  '{"name": ..., "arguments": {...}}'
        if not isinstance(call, dict):
            return "", call_json, 'error: a tool call is {"name": ..., "arguments": {...}}'
        name, arguments = call.get("name"), call.get("arguments", {})
        result = call_tool(name, arguments, allowed=self.names)
        return name if isinstance(name, str) else "", arguments, result

    def _forced_ids(self, conversation: list[dict], tool_message: dict) -> list[int]:
        ids, mask = chat_render.render(self.model, conversation)
        close = max(i for i, m in enumerate(mask) if m)  # the token ending the assistant's turn
        full = chat_render.prompt_ids(self.model, conversation + [tool_message])
        if full[:close + 1] != ids[:close + 1]:
            raise ChatTemplateError("the chat template renders a conversation differently once a "
                                    "tool message follows; tool output cannot be forced")
        return full[close:]


def _has_gt(enc, token: int) -> bool:
    try:
        return b">" in enc.decode_single_token_bytes(token)
    except KeyError:  # an id with no token (gaps between ranks and specials)
        return False
