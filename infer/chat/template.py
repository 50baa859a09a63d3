"""Jinja chat templates, rendered the way Hugging Face renders them.

A sandboxed jinja2 environment with `trim_blocks`/`lstrip_blocks`, `raise_exception`, `tojson`
and `strftime_now`, for the templates models carry (a GGUF's `tokenizer.chat_template`, a
Hugging Face `tokenizer_config.json`'s `chat_template`, e.g. ChatML for SmolLM2) and for the
twofiles template (infer.chat.twofiles). Turning the text into token ids and a loss mask is
`infer.chat.render`'s job.
"""

from __future__ import annotations

import datetime
import functools
import json
from typing import Sequence

import jinja2
import jinja2.sandbox

from infer.chat import twofiles
from infer.chat.messages import ChatError, check

# Special tokens that end an assistant turn in the templates we know of.
_TURN_END_TOKENS = ("<|assistant_end|>", "<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>",
                    "</s>")


class ChatTemplateError(ChatError):
    """The template could not render this conversation; the message says why."""


def _raise(message):
    raise ChatTemplateError(f"the model's chat template refused the conversation: {message}")


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent,
                                                                   ensure_ascii=False)
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the model's chat template is not valid Jinja: {e}") from None


def render_raw(template: str, messages: Sequence[dict], *, add_generation_prompt: bool,
               bos_token: str = "", eos_token: str = "") -> str:
    """The template's text for messages already checked (or holding sentinels)."""
    try:
        return _compiled(template).render(
            messages=list(messages), add_generation_prompt=add_generation_prompt,
            bos_token=bos_token, eos_token=eos_token)
    except (jinja2.TemplateError, TypeError) as e:
        raise ChatTemplateError(
            f"the model's chat template failed on this conversation ({type(e).__name__}: {e})"
        ) from None


def render_text(template: str, messages: Sequence[dict], *, add_generation_prompt: bool = True,
                bos_token: str = "", eos_token: str = "") -> str:
    """The template's text for `messages` (Hugging Face `apply_chat_template(tokenize=False)`)."""
    return render_raw(template, check(messages), add_generation_prompt=add_generation_prompt,
                      bos_token=bos_token, eos_token=eos_token)


def is_twofiles_tokenizer(enc) -> bool:
    return twofiles.MARKER in enc.special_tokens_set


def turn_end_ids(enc, eos_id: int | None = None) -> list[int]:
    """Token ids that end an assistant turn: the template's end-of-turn tokens and EOS."""
    ids = {enc.encode_single_token(t) for t in _TURN_END_TOKENS if t in enc.special_tokens_set}
    if eos_id is not None:
        ids.add(int(eos_id))
    return sorted(ids)
