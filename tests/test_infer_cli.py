"""`python -m infer generate` and `python -m infer chat`, run as a user runs them."""

import json
import os
import subprocess
import sys

import pytest

import infer
from infer.chat import render as chat_render
from infer.runtime import engine
from tests.test_export_common import greedy_ids, tiny_twofiles_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    """The tiny twofiles model saved as a params file, and the model loaded back from it."""
    from infer.formats.export import export

    out = tmp_path_factory.mktemp("tiny") / "export"
    export(tiny_twofiles_model(), "twofiles", out)
    path = str(out / "model.bin")
    return path, infer.load(path)


def _run(*args, stdin=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    proc = subprocess.run([sys.executable, "-m", "infer", *args], input=stdin, text=True,
                          capture_output=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _greedy_reply(m, messages, n):
    ids = chat_render.prompt_ids(m, messages)
    return m.decode(greedy_ids(m, ids, n, stop_ids=engine.stop_ids_for(m, chat=True)))


def test_generate_json_is_the_greedy_continuation(tiny_file):
    path, m = tiny_file
    prompt = "The quick brown"
    out = json.loads(_run("generate", "--model", path, "--prompt", prompt,
                          "--max-new-tokens", "10", "--json"))
    expected = greedy_ids(m, m.encode(prompt), 10, stop_ids=m.eos_ids)
    assert out["token_ids"] == expected
    assert out["text"] == m.decode(expected)
    assert out["prefill_tokens_per_sec"] > 0 and out["decode_tokens_per_sec"] > 0
    assert out["sampling"] == {"temperature": 0.0, "top_k": 0, "top_p": 1.0, "seed": 0,
                               "source": "the default for a completion"}


def test_an_export_directory_is_a_model_source(tiny_file):
    """`--model DIR` of a `--format twofiles` export reads DIR/model.bin."""
    path, m = tiny_file
    prompt = "The quick brown"
    out = json.loads(_run("generate", "--model", os.path.dirname(path), "--prompt", prompt,
                          "--max-new-tokens", "6", "--json"))
    assert out["token_ids"] == greedy_ids(m, m.encode(prompt), 6, stop_ids=m.eos_ids)


def test_chat_repl_keeps_history_and_obeys_commands(tiny_file):
    path, m = tiny_file
    n = 6
    stdin = "hello\nand then?\n/temperature 0\n/system Be brief.\nbye\n/reset\nbye\n/quit\n"
    out = _run("chat", "--model", path, "--temperature", "0", "--max-new-tokens", str(n),
               stdin=stdin)
    first = _greedy_reply(m, [{"role": "user", "content": "hello"}], n)
    second = _greedy_reply(m, [{"role": "user", "content": "hello"},
                               {"role": "assistant", "content": first},
                               {"role": "user", "content": "and then?"}], n)
    system_bye = _greedy_reply(m, [{"role": "system", "content": "Be brief."},
                                   {"role": "user", "content": "bye"}], n)
    assert first and second and system_bye  # real replies, not immediate stops
    banner = out.splitlines()[0]
    assert banner == (f"chatting with {path}: greedy (--temperature as given; the rest from "
                      "the default for models that recommend no settings)")
    pieces = [first, second, "(temperature 0.0)", "(system message set; conversation cleared)",
              system_bye, "(conversation cleared)", system_bye]
    at = 0
    for piece in pieces:  # in this order, each after the previous
        found = out.find(piece, at)
        assert found >= 0, (piece, out[at:])
        at = found + len(piece)


def test_bad_flags_get_one_line_errors(tiny_file):
    path, _ = tiny_file
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="")
    for args, expected in [(["--model", "/no/such.gguf"], "could not load --model"),
                           (["--model", path, "--top-p", "0"], "top_p"),
                           (["--model", path, "--system", "Be brief."],
                            "--system needs --chat")]:
        proc = subprocess.run([sys.executable, "-m", "infer", "generate", "--prompt", "x",
                               *args], capture_output=True, text=True, cwd=ROOT, env=env,
                              timeout=300)
        assert proc.returncode == 2 and expected in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
