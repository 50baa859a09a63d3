"""Jinja chat templates, rendered the way Hugging Face renders them.

A sandboxed jinja2 environment with `trim_blocks`/`lstrip_blocks`, `raise_exception`, `tojson`
and `strftime_now`, for the templates models carry (a GGUF's `tokenizer.chat_template`, a
Hugging Face `tokenizer_config.json`'s `chat_template`, e.g. ChatML for SmolLM2) and for the
twofiles template (infer.chat.twofiles). Turning the text into token ids and a loss mask is
`infer.chat.render`'s job.

A template comes with a model file, so it is untrusted code. It runs in jinja2's
ImmutableSandboxedEnvironment, made stricter: reaching for an underscore attribute
(`__class__`, `__globals__`) raises at once instead of rendering as empty; `range` refuses more
than MAX_RANGE items; `*` and `**` refuse results past MAX_OUTPUT_CHARS items or MAX_EXPONENT;
and every call, loop step of `range`, and output chunk checks a deadline of TIME_LIMIT_S, so a
template that loops without end fails within about that time. Requests never supply templates
(the server refuses a `chat_template` field): only the model's own file does.
"""

from __future__ import annotations

import datetime
import functools
import json
import threading
import time
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


TIME_LIMIT_S = 2.0  # real templates render a conversation in well under a millisecond
MAX_RANGE = 100_000
MAX_OUTPUT_CHARS = 16_000_000
MAX_EXPONENT = 1_000
_deadline = threading.local()  # per thread: the server renders on request threads


def _check_time() -> None:
    if time.monotonic() > getattr(_deadline, "at", float("inf")):
        raise ChatTemplateError(f"the model's chat template ran longer than {TIME_LIMIT_S:g} s "
                                "(a loop without end?); refused")


def _bounded_range(*args):
    if any(not isinstance(a, int) for a in args):
        raise ChatTemplateError(f"the chat template called range{args}: integers only")
    items = range(*args)
    if len(items) > MAX_RANGE:
        raise ChatTemplateError(f"the chat template asked for range{args} ({len(items)} "
                                f"items); at most {MAX_RANGE}: refused")
    return _Range(items)


class _Range:
    """A range whose iteration checks the deadline at every step (|length and indexing as a
    range's)."""

    def __init__(self, items: range):
        self._items = items  # underscore: out of a template's reach

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, i):
        return self._items[i]

    def __iter__(self):
        for i in self._items:
            _check_time()
            yield i


def _check_call(args, kwargs) -> None:
    """Before any call or filter: the deadline, and no size argument (`'a'.ljust(N)`,
    `'a'|center(N)`) that would build something past MAX_OUTPUT_CHARS in one C call."""
    _check_time()
    for value in (*args, *kwargs.values()):
        if isinstance(value, int) and abs(value) > MAX_OUTPUT_CHARS:
            raise ChatTemplateError(f"the chat template passes {value} to a call or filter; "
                                    f"numbers past {MAX_OUTPUT_CHARS} are refused")


def _bounded(f):
    @functools.wraps(f)  # keeps jinja's pass_context/pass_environment marks
    def checked(*args, **kwargs):
        _check_call(args, kwargs)
        return f(*args, **kwargs)
    return checked


class _BoundedSandbox(jinja2.sandbox.ImmutableSandboxedEnvironment):
    """The immutable sandbox, failing loudly on internals and bounded in time and size."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj, attribute):
        raise ChatTemplateError(f"the model's chat template reaches for {attribute!r} of a "
                                f"{type(obj).__name__}: Python internals are refused")

    def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 -- jinja's signature
        _check_call(args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context, operator, left, right):
        _check_time()
        if operator == "**" and isinstance(right, (int, float)) and abs(right) > MAX_EXPONENT:
            raise ChatTemplateError(f"the chat template raises to the power {right}; at most "
                                    f"{MAX_EXPONENT}: refused")
        if operator == "*":
            sizes = [len(x) * y for x, y in ((left, right), (right, left))
                     if hasattr(x, "__len__") and isinstance(y, int)]
            if any(size > MAX_OUTPUT_CHARS for size in sizes):
                raise ChatTemplateError(f"the chat template repeats a sequence to more than "
                                        f"{MAX_OUTPUT_CHARS} items: refused")
        return super().call_binop(context, operator, left, right)


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> jinja2.Template:
    env = _BoundedSandbox(
        trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["range"] = _bounded_range
    del env.globals["lipsum"]  # text generation on demand: no template needs it
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent,
                                                                   ensure_ascii=False)
    env.filters = {name: _bounded(f) for name, f in env.filters.items()}
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    try:
        return env.from_string(template)
    except jinja2.TemplateError as e:
        raise ChatTemplateError(f"the model's chat template is not valid Jinja: {e}") from None


def render_raw(template: str, messages: Sequence[dict], *, add_generation_prompt: bool,
               bos_token: str = "", eos_token: str = "") -> str:
    """The template's text for messages already checked (or holding sentinels), rendered
    within TIME_LIMIT_S and MAX_OUTPUT_CHARS (ChatTemplateError past either)."""
    compiled = _compiled(template)
    _deadline.at = time.monotonic() + TIME_LIMIT_S
    chunks, size = [], 0
    try:
        for chunk in compiled.generate(messages=list(messages),
                                       add_generation_prompt=add_generation_prompt,
                                       bos_token=bos_token, eos_token=eos_token):
            _check_time()
            size += len(chunk)
            if size > MAX_OUTPUT_CHARS:
                raise ChatTemplateError(f"the model's chat template wrote more than "
                                        f"{MAX_OUTPUT_CHARS} characters: refused")
            chunks.append(chunk)
    except (jinja2.TemplateError, TypeError, RecursionError, OverflowError, MemoryError) as e:
        raise ChatTemplateError(
            f"the model's chat template failed on this conversation ({type(e).__name__}: {e})"
        ) from None
    finally:
        _deadline.at = float("inf")
    return "".join(chunks)


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
