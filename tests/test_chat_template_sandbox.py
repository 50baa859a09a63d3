"""Chat templates come with model files, so they are untrusted code: the sandbox refuses a
template that reaches for Python internals, loops without end or builds huge values, quickly
and with an error that says so, from any thread; the templates models really carry still
render."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from infer.chat import template as chat_template
from infer.chat.template import ChatTemplateError, render_text

MESSAGES = [{"role": "user", "content": "hi"}]
CHATML = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

# (template, a word the error must contain): each is refused.
ATTACKS = [
    ("{{ ''.__class__.__mro__[1].__subclasses__() }}", "__class__"),
    ("{{ messages.__class__ }}", "__class__"),
    ("{{ raise_exception.__globals__['os'] }}", "__globals__"),
    ("{{ cycler.__init__.__globals__ }}", "__init__"),
    ("{{ messages[0]|attr('__class__') }}", "__class__"),
    ("{% for i in range(10**9) %}x{% endfor %}", "1000000000"),
    ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
     "longer than"),
    ("{% for i in range(100000) %}{% for m in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
     "longer than"),
    ("{{ 'a' * 10**9 }}", "repeats"),
    ("{{ 'a'|center(10**9) }}", "1000000000"),
    ("{{ 'a'.ljust(10**10) }}", "10000000000"),
    ("{{ 2 ** (10 ** 6) }}", "power"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError"),
    ("{{ lipsum(n=5) }}", "lipsum"),
]


def _refusal(template: str) -> tuple[str, float]:
    start = time.monotonic()
    with pytest.raises(ChatTemplateError) as e:
        render_text(template, MESSAGES)
    return str(e.value), time.monotonic() - start


@pytest.mark.parametrize("template,word", ATTACKS, ids=[a[0][:40] for a in ATTACKS])
def test_attacking_template_is_refused_quickly_with_a_clear_error(template, word):
    message, seconds = _refusal(template)
    assert word in message
    assert "chat template" in message
    # The loops stop at the deadline; everything else is refused before any work.
    assert seconds < chat_template.TIME_LIMIT_S + 1.0


def test_an_unbounded_loop_is_refused_from_server_threads_too():
    endless = ATTACKS[6][0]
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(_refusal, [endless, endless]))
    assert all("longer than" in m and s < chat_template.TIME_LIMIT_S + 1.5 for m, s in results)


def test_the_raw_jinja_sandbox_would_have_rendered_internals_silently():
    """Why the stricter sandbox: jinja2's own renders `__class__` as empty text, with no error,
    and its range() takes 100000 items per loop, so nested loops run for hours."""
    import jinja2.sandbox

    env = jinja2.sandbox.ImmutableSandboxedEnvironment()
    assert env.from_string("[{{ ''.__class__ }}]").render() == "[]"
    assert jinja2.sandbox.MAX_RANGE == 100_000


def test_chatml_and_a_loop_over_messages_still_render():
    text = render_text(CHATML, MESSAGES + [{"role": "assistant", "content": "hello"}])
    assert text == ("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
                    "<|im_start|>assistant\n")
    assert render_text("{% for i in range(3) %}{{ loop.index }}{% endfor %}", MESSAGES) == "123"


def test_a_template_carried_by_a_model_is_refused_when_rendering_a_prompt():
    """A loaded model whose file carried an attacking template: its prompts are refused."""
    import dataclasses

    from infer.runtime import engine
    from tests.test_export_common import tiny_twofiles_model

    model = dataclasses.replace(tiny_twofiles_model(),
                                chat_template="{{ messages.__class__.__base__ }}")
    with pytest.raises(ChatTemplateError, match="__class__"):
        engine.prompt_ids(model, "hello", chat=True)


def test_a_bounded_range_still_has_a_length_and_items():
    assert render_text("{{ range(4)|length }} {{ range(2, 9)[1] }} {{ range(3)|list }}",
                       MESSAGES) == "4 3 [0, 1, 2]"
