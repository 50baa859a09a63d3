"""A model's chat template: conversation -> prompt token ids.

- Models that carry a Jinja template (a GGUF's `tokenizer.chat_template`, a Hugging Face
  `tokenizer_config.json`'s `chat_template`, e.g. ChatML for SmolLM2) are rendered the way
  Hugging Face renders them: a sandboxed jinja2 environment with `trim_blocks`/`lstrip_blocks`,
  `raise_exception`, `tojson` and `strftime_now`.
- twofiles models have no template string: they use the project's one renderer,
  `infer.chat.render`, with its own special tokens.

Message text is always encoded as plain text: a user who types `<|im_start|>` gets those
characters, not a control token. Only the template's own markup becomes special tokens.
"""

from __future__ import annotations

import datetime
import json
from typing import Sequence

import jinja2
import jinja2.sandbox

TWOFILES_MARKER = "<|assistant_start|>"
# Special tokens that end an assistant turn in the templates we know of.
_TURN_END_TOKENS = ("<|assistant_end|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>",
                    "</s>")
_SENTINEL = "\x00twofiles-message-{}\x00"


class ChatTemplateError(ValueError):
    """The template could not render this conversation; the message says why."""


def _raise(message):
    raise ChatTemplateError(f"the model's chat template refused the conversation: {message}")


def _environment() -> jinja2.Environment:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent,
                                                                   ensure_ascii=False)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


def _check_messages(messages: Sequence[dict]) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(
                m.get("content"), str):
            raise ChatTemplateError(
                f"message {i} must be a dict with string 'role' and 'content', got {m!r}")


def render_text(template: str, messages: Sequence[dict], *, add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "", **extra) -> str:
    """The template's text for `messages` (Hugging Face `apply_chat_template(tokenize=False)`)."""
    _check_messages(messages)
    try:
        compiled = _environment().from_string(template)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the model's chat template is not valid Jinja: {e}") from None
    return compiled.render(messages=list(messages), add_generation_prompt=add_generation_prompt,
                           bos_token=bos_token, eos_token=eos_token, **extra)


def _encode_template_text(enc, template, messages, **kwargs) -> list[int]:
    """Encodes the rendered template, with markup as special tokens and messages as plain text.

    Messages are rendered as sentinels, then each piece is encoded on its own. Only used when a
    message contains special-token text; otherwise the whole render is encoded at once (exactly
    what Hugging Face does), so boundaries tokenize as usual.
    """
    placeholders = [dict(m, content=_SENTINEL.format(i)) for i, m in enumerate(messages)]
    text = render_text(template, placeholders, **kwargs)
    ids: list[int] = []
    for i, m in enumerate(messages):
        before, sep, text = text.partition(_SENTINEL.format(i))
        if not sep:
            raise ChatTemplateError(
                "message text that contains special-token markup can only be encoded safely "
                "when the chat template inserts each message's content unchanged")
        ids += enc.encode(before, allowed_special="all") + enc.encode_ordinary(m["content"])
    return ids + enc.encode(text, allowed_special="all")


def is_twofiles_tokenizer(enc) -> bool:
    return TWOFILES_MARKER in enc.special_tokens_set


def render(enc, messages: Sequence[dict], *, template: str | None = None,
           add_generation_prompt: bool = True, bos_token: str = "",
           eos_token: str = "") -> list[int]:
    """Prompt token ids for a conversation, ready for generation when add_generation_prompt."""
    _check_messages(messages)
    if template is None:
        if not is_twofiles_tokenizer(enc):
            raise ChatTemplateError(
                "this model has no chat template and its tokenizer lacks the twofiles chat "
                f"tokens (such as {TWOFILES_MARKER}); it cannot chat, use plain generation")
        from infer.chat import render as chat  # the project's one renderer for its own tokenizers

        ids, _ = chat.render(enc, list(messages), add_generation_prompt=add_generation_prompt)
        return list(ids)
    kwargs = dict(add_generation_prompt=add_generation_prompt, bos_token=bos_token,
                  eos_token=eos_token)
    specials = enc.special_tokens_set
    if any(s in m["content"] for m in messages for s in specials):
        return _encode_template_text(enc, template, messages, **kwargs)
    return enc.encode(render_text(template, messages, **kwargs), allowed_special="all")


def turn_end_ids(enc, eos_id: int | None = None) -> list[int]:
    """Token ids that end an assistant turn: the template's end-of-turn tokens and EOS."""
    ids = {enc.encode_single_token(t) for t in _TURN_END_TOKENS if t in enc.special_tokens_set}
    if eos_id is not None:
        ids.add(int(eos_id))
    return sorted(ids)
