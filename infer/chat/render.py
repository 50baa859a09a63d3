"""The one renderer of a conversation for twofiles tokenizers, with its loss mask.

A conversation becomes:

    <|bos|>
    <|system_start|> text <|system_end|>              (optional, first message only)
    <|user_start|> text <|user_end|>
    <|assistant_start|> text [<|tool_call_start|> call <|tool_call_end|>] <|assistant_end|>
    <|tool_output_start|> text <|tool_output_end|>    (a "tool" message: what a tool returned)
    ...

The loss mask is 1 exactly on the tokens the model must learn to produce: an assistant's text,
its tool call with both delimiters, and its closing <|assistant_end|>. Everything the model is
given (bos, system, user, tool output, and the <|assistant_start|> that the caller writes as
the generation prompt) is 0. `mask[i]` belongs to `ids[i]`: a trainer predicting ids[1:] from
ids[:-1] weights its targets by mask[1:].

Message text is encoded with `encode_text`, so a user who types `<|assistant_end|>` gets plain
text, never a control token.
"""

from __future__ import annotations

from infer.formats.tokenizer_file import bos_id, encode_text, special_id

ROLES = ("system", "user", "assistant", "tool")
# role -> (start token, end token); a tool message is the output the tool returned
_DELIMITERS = {
    "system": ("<|system_start|>", "<|system_end|>"),
    "user": ("<|user_start|>", "<|user_end|>"),
    "assistant": ("<|assistant_start|>", "<|assistant_end|>"),
    "tool": ("<|tool_output_start|>", "<|tool_output_end|>"),
}


class ChatError(ValueError):
    """A conversation that cannot be rendered; the message names the bad message."""


def _check(messages) -> None:
    if not isinstance(messages, (list, tuple)):
        raise ChatError(f"messages must be a list of {{'role', 'content'}} dicts, got "
                        f"{type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            role = m.get("role") if isinstance(m, dict) else m
            raise ChatError(f"message {i}: role {role!r} is not one of {ROLES}")
        if not isinstance(m.get("content", ""), str):
            raise ChatError(f"message {i}: content must be str, got "
                            f"{type(m.get('content')).__name__}")
        if m["role"] == "system" and i != 0:
            raise ChatError(f"message {i}: a system message may only come first")
        if "tool_call" in m and (m["role"] != "assistant" or not isinstance(m["tool_call"], str)):
            raise ChatError(f"message {i}: 'tool_call' (a str) is only for assistant messages")


def render(enc, messages, *, add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its loss mask (same length; 1 = train on this token).

    messages: [{"role": "system"|"user"|"assistant"|"tool", "content": str}, ...]; an assistant
    message may also carry "tool_call": str, rendered after its content. With
    `add_generation_prompt`, <|assistant_start|> is appended (mask 0) for the model to answer.
    """
    _check(messages)
    ids, mask = [bos_id(enc)], [0]

    def add(tokens: list[int], learn: bool) -> None:
        ids.extend(tokens)
        mask.extend([int(learn)] * len(tokens))

    for m in messages:
        start, end = (special_id(enc, name) for name in _DELIMITERS[m["role"]])
        learn = m["role"] == "assistant"
        add([start], False)
        add(encode_text(enc, m.get("content", "")), learn)
        if "tool_call" in m:
            add([special_id(enc, "<|tool_call_start|>")], True)
            add(encode_text(enc, m["tool_call"]), True)
            add([special_id(enc, "<|tool_call_end|>")], True)
        add([end], learn)
    if add_generation_prompt:
        add([special_id(enc, "<|assistant_start|>")], False)
    return ids, mask


def stop_ids(enc) -> list[int]:
    """Ids that end an assistant's turn when generating. A turn with a tool call ends the same
    way (call, then <|assistant_end|>); the caller reads the call from the turn's tokens."""
    return [special_id(enc, "<|assistant_end|>")]
