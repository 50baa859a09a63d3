"""The one chat renderer: a conversation -> token ids and a loss mask, for any chat template.

The template (a model's Jinja template, or infer.chat.twofiles.TEMPLATE for twofiles tokenizers)
is rendered with every piece of message text (content, tool-call names and arguments) replaced by
a unique sentinel. The template's own text between sentinels is markup: only there do
special-token strings become special ids. Message text is put back as plain text, so content of
any role can never produce a control token. Between two special tokens, markup and content are
encoded together as one ordinary text, which is what Hugging Face's `apply_chat_template` does,
so both give the same ids whenever the content holds no special-token string.

The loss mask is 1 on what the model must learn to write: each assistant message from the end
of its generation prompt (the text of the conversation before it with `add_generation_prompt`)
to the first end-of-turn token after it, inclusive: its content, its tool calls and that token.
Everything else (system, user and tool messages, role headers, scaffolding) is 0. `mask[i]`
belongs to `ids[i]`: a trainer predicting ids[1:] from ids[:-1] weights its targets by mask[1:].

Templates for which this attribution does not hold are refused rather than guessed at: one that
rewrites message text (strips, splits or escapes it), one whose render of a conversation does not
start with the render of its beginning (not prefix-stable), one where a token straddles the start
of an assistant turn, or one that writes no end-of-turn token after an assistant message.

Templates that know nothing of tools (SmolLM2's ChatML) get an assistant's tool calls folded into
its content in the Qwen/Hermes convention, `<tool_call>\\n{"name": ..., "arguments": ...}\\n
</tool_call>`, one per call, after the text; tool messages render as the template renders them.
"""

from __future__ import annotations

import re
import secrets
from typing import NamedTuple

from infer.chat import twofiles
from infer.chat.messages import call_text, check
from infer.chat.template import ChatTemplateError, is_twofiles_tokenizer, render_raw, turn_end_ids


class _Source(NamedTuple):
    enc: object  # tiktoken.Encoding
    template: str
    bos_token: str
    eos_token: str
    end_ids: frozenset


def render(source, messages, *, add_generation_prompt: bool = False, template: str | None = None
           ) -> tuple[list[int], list[int]]:
    """Token ids of a conversation and its loss mask (same length; 1 = train on this token).

    source: a loaded model (`infer.load`: its tokenizer, chat template, BOS and EOS) or a
    tokenizer (tiktoken.Encoding). template: Jinja text that replaces the model's; with
    neither, twofiles tokenizers use infer.chat.twofiles.TEMPLATE. messages: OpenAI-style (see
    infer.chat.messages). With `add_generation_prompt`, the assistant's header follows (mask 0)
    for the model to answer.
    """
    src = _source(source, template)
    messages = check(messages)
    sentinels: dict[str, str] = {}
    folded = "tool_calls" not in src.template
    marked = [_with_sentinels(m, sentinels, folded) for m in messages]

    def text_of(msgs, generation_prompt: bool) -> str:
        return render_raw(src.template, msgs, add_generation_prompt=generation_prompt,
                          bos_token=src.bos_token, eos_token=src.eos_token)

    text = text_of(marked, add_generation_prompt)
    real = [_fold(m) for m in messages] if folded else messages
    if _put_back(text, sentinels) != text_of(real, add_generation_prompt):
        raise ChatTemplateError(
            "the chat template changes message text (strips, splits or escapes it), so its "
            "markup cannot be told from content; render this model's prompts as plain text")
    turns = [(i, _prefix_length(i, text, text_of(marked[:i], True)),
              _prefix_length(i, text, text_of(marked[:i + 1], False)))
             for i, m in enumerate(messages) if m["role"] == "assistant"]
    ids, token_at = _encode(src.enc, text, sentinels, {c for _, a, b in turns for c in (a, b)})
    mask = [0] * len(ids)
    for i, a, b in turns:
        start, end = token_at[a], _turn_end(i, ids, token_at[a], token_at[b], src.end_ids)
        mask[start:end + 1] = [1] * (end + 1 - start)
    return ids, mask


def _prefix_length(i: int, text: str, prefix: str) -> int:
    """len(prefix), once sure that `text` starts with it: the conversation up to message i
    renders as the beginning of the whole conversation."""
    if not text.startswith(prefix):
        raise ChatTemplateError(
            f"message {i}: the chat template renders the conversation up to this message "
            "differently from its beginning in the whole conversation (not prefix-stable), so "
            "the assistant's tokens cannot be located")
    return len(prefix)


def _turn_end(i: int, ids: list[int], start: int, limit: int, end_ids) -> int:
    """Index of the end-of-turn token that closes assistant message i (in ids[start:limit])."""
    end = next((k for k in range(start, limit) if ids[k] in end_ids), None)
    if end is None:
        raise ChatTemplateError(
            f"message {i}: the chat template writes no end-of-turn token ({sorted(end_ids)}) "
            "after this assistant message; cannot mask it")
    return end


def prompt_ids(source, messages, *, template: str | None = None) -> list[int]:
    """Ids of a conversation followed by the assistant's header: a prompt to generate from."""
    return render(source, messages, add_generation_prompt=True, template=template)[0]


def _source(source, template) -> _Source:
    enc = getattr(source, "tokenizer", source)
    eos_ids, bos_token, eos_token = [], "", ""
    if enc is not source:  # a loaded model: its own template unless one is given
        template = source.chat_template if template is None else template
        eos_ids = [int(i) for i in (source.eos_ids or [])]
        if source.bos_id is not None:
            bos_token = enc.decode([int(source.bos_id)])
        if eos_ids:
            eos_token = enc.decode(eos_ids[:1])
    if template is None:
        if not is_twofiles_tokenizer(enc):
            raise ChatTemplateError(
                "this model has no chat template and its tokenizer lacks the twofiles chat "
                f"tokens (such as {twofiles.MARKER}); it cannot chat, use plain generation")
        template = twofiles.TEMPLATE
    end_ids = set(turn_end_ids(enc))
    end_ids.update(eos_ids)
    return _Source(enc, template, bos_token, eos_token, frozenset(end_ids))


def _sentinel(sentinels: dict[str, str], text: str) -> str:
    """A fresh placeholder for `text`: letters and digits only, so that a template's filters
    (tojson, escaping) leave it intact; the random part makes it unguessable to content."""
    if not text:
        return text
    key = f"TWOFILES{secrets.token_hex(8)}X{len(sentinels)}X"
    sentinels[key] = text
    return key


def _with_sentinels(m: dict, sentinels: dict[str, str], folded: bool) -> dict:
    """The message with every string a user or tool supplies replaced by a sentinel."""
    out = {k: _sentinel(sentinels, v) if k in ("content", "name", "tool_call_id") else v
           for k, v in m.items()}
    if "tool_calls" in m:
        out["tool_calls"] = [_call_with_sentinels(c, sentinels) for c in m["tool_calls"]]
        if folded:
            out = _fold(out)
    return out


def _call_with_sentinels(call: dict, sentinels: dict[str, str]) -> dict:
    fn = call["function"]
    out = {**call, "function": {**fn, "name": _sentinel(sentinels, fn["name"]),
                                "arguments": _sentinel(sentinels, fn["arguments"])}}
    if "id" in call:
        out["id"] = _sentinel(sentinels, call["id"])
    return out


def _fold(m: dict) -> dict:
    """An assistant message with its tool calls written into its content (for templates without
    a tool branch), in the <tool_call> convention of Qwen/SmolLM-style templates."""
    if "tool_calls" not in m:
        return m
    parts = [m["content"]] if m.get("content") else []
    parts += ["<tool_call>\n" + call_text(c["function"]["name"], c["function"]["arguments"])
              + "\n</tool_call>" for c in m["tool_calls"]]
    return {k: v for k, v in m.items() if k != "tool_calls"} | {"content": "\n".join(parts)}


def _put_back(text: str, sentinels: dict[str, str]) -> str:
    for key, value in sentinels.items():
        text = text.replace(key, value)
    return text


def _encode(enc, text: str, sentinels: dict[str, str], cuts: set[int]
            ) -> tuple[list[int], dict[int, int]]:
    """Ids of the sentinel-marked `text` and, for each offset in `cuts`, the index of the first
    token at or after it. Special-token strings count only in markup; each run of ordinary text
    (markup and content) between two special tokens is encoded as one, and a cut that falls
    inside one of its tokens is refused."""
    specials = sorted(enc.special_tokens_set, key=len, reverse=True)
    pattern = "|".join(re.escape(k) for k in sentinels)
    pattern += "|" if pattern and specials else ""
    pattern += "|".join(re.escape(s) for s in specials)
    ids: list[int] = []
    token_at: dict[int, int] = {}
    run: list[str] = []  # ordinary text since the last special token
    pending: list[tuple[int, int]] = []  # (cut offset, byte position in the run)

    def run_bytes() -> int:
        return sum(len(s.encode("utf-8")) for s in run)

    def flush() -> None:
        tokens = enc.encode_ordinary("".join(run))
        boundaries, position = {0: 0}, 0
        for k, token in enumerate(tokens, start=1):
            position += len(enc.decode_single_token_bytes(token))
            boundaries[position] = k
        for offset, byte in pending:
            if byte not in boundaries:
                raise ChatTemplateError(
                    "the chat template joins an assistant turn's first or last token to the "
                    "text around it, so the turn cannot be masked exactly")
            token_at[offset] = len(ids) + boundaries[byte]
        ids.extend(tokens)
        run.clear()
        pending.clear()

    def markup(start: int, stop: int) -> None:
        position = start
        for cut in sorted(c for c in cuts if start <= c <= stop):
            run.append(text[position:cut])
            pending.append((cut, run_bytes()))
            position = cut
        run.append(text[position:stop])

    position = 0
    for match in re.finditer(pattern, text) if pattern else ():
        markup(position, match.start())
        piece = match.group()
        if piece in sentinels:
            run.append(sentinels[piece])
        else:
            flush()
            ids.append(enc.encode_single_token(piece))
        position = match.end()
    markup(position, len(text))
    flush()
    missing = cuts - token_at.keys()
    if missing:
        raise ChatTemplateError("an assistant turn starts or ends inside message text; the chat "
                                "template cannot be attributed")
    return ids, token_at
