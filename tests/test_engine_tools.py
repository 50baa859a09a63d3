"""Tools in the engine: a row's tool call gets the tool's output forced in (marked not sampled),
the row goes on from it, and the other row of the batch is untouched."""

from __future__ import annotations

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiktoken

import model
from infer.formats import tokenizer_file
from infer.load_model import Model
from infer.runtime import engine
from infer.tools.session import ToolRunner

CALL = json.dumps({"name": "calculator", "arguments": {"expression": "6*7"}})
QUESTIONS = ["What is 6*7?", "Say hi."]
MAX_NEW = 96


@pytest.fixture(scope="module")
def tiny_chat():
    """A random tiny model with a byte-level twofiles tokenizer (chat special tokens included)."""
    enc = tokenizer_file.encoding({bytes([i]): i for i in range(256)})
    cfg = dataclasses.replace(model.preset("tiny"), vocab_size=enc.n_vocab, max_seq_len=256,
                              tie_embeddings=False)
    params = model.init(cfg, jax.random.key(0))
    params = dict(params, unembed=params["unembed"] * 8.0)  # greedy choices far from ties
    return Model(cfg, params, enc, None, enc.encode_single_token("<|bos|>"), [], True)


def _special(enc, name):
    return enc.encode_single_token(name)


def _scripted_forward(script_BL):
    """model.forward whose logits force `script_BL[b, p]` as the token after position p
    (where it is >= 0): row 0 is made to write a tool call, the rest is the model's own."""
    script_BL = jnp.asarray(script_BL)

    def forward(params, tokens_BT, cfg, cache=None, positions_BT=None, valid_BT=None):
        logits_BTV, cache = model.forward(params, tokens_BT, cfg, cache=cache,
                                          positions_BT=positions_BT, valid_BT=valid_BT)
        want_BT = jnp.take_along_axis(script_BL[:tokens_BT.shape[0]], positions_BT, axis=1)
        one_hot_BTV = jax.nn.one_hot(jnp.maximum(want_BT, 0), cfg.vocab_size) * 1e4
        return jnp.where((want_BT >= 0)[..., None], one_hot_BTV, logits_BTV), cache

    return forward


@pytest.fixture(scope="module")
def script(tiny_chat):
    """The prompts, row 0's tool call, and a forward that makes row 0 write it (built once, so
    that runs share the engine's compiled executables)."""
    enc = tiny_chat.tokenizer
    conversations = [[{"role": "user", "content": q}] for q in QUESTIONS]
    prompts = [engine.prompt_ids(tiny_chat, c, chat=True) for c in conversations]
    call_ids = ([_special(enc, "<|tool_call_start|>")] + enc.encode_ordinary(CALL)
                + [_special(enc, "<|tool_call_end|>")])
    script_BL = np.full((2, 256), -1, np.int32)
    first = len(prompts[0]) - 1  # the last prompt position predicts the first new token
    script_BL[0, first:first + len(call_ids)] = call_ids
    return conversations, prompts, call_ids, _scripted_forward(script_BL)


def _run(tiny_chat, script, *, tools: bool, temperature: float = 0.0):
    conversations, prompts, _, forward = script
    runner = ToolRunner(tiny_chat, conversations, ["calculator"]) if tools else None
    gen = engine.generate(tiny_chat.params, tiny_chat.config, prompts, max_new_tokens=MAX_NEW,
                          temperature=temperature, seed=3, decode_fn=tiny_chat.tokenizer.decode,
                          forward_fn=forward, tools=runner)
    return gen, runner


def test_tool_output_is_forced_into_the_calling_row_and_marked_not_sampled(tiny_chat, script):
    enc = tiny_chat.tokenizer
    _, prompts, call_ids, _ = script
    gen, runner = _run(tiny_chat, script, tools=True)
    out = gen[0]
    # The twofiles layout after a call, written out by hand: close the turn, the tool's
    # output, open the next assistant turn.
    expected_forced = ([_special(enc, "<|assistant_end|>"), _special(enc, "<|tool_output_start|>")]
                       + enc.encode_ordinary("42")
                       + [_special(enc, "<|tool_output_end|>"), _special(enc, "<|assistant_start|>")])
    n_call, n_forced = len(call_ids), len(expected_forced)
    assert out.token_ids[:n_call] == call_ids
    assert out.token_ids[n_call:n_call + n_forced] == expected_forced
    assert out.sampled == [True] * n_call + [False] * n_forced + [True] * (
        len(out.token_ids) - n_call - n_forced)
    assert gen[1].sampled == [True] * len(gen[1].token_ids)
    assert runner.calls == [[{"name": "calculator", "arguments": {"expression": "6*7"},
                              "result": "42"}], []]
    # The row goes on from the forced tokens: what it generates after them is the model's own
    # greedy continuation of prompt + call + tool output (checked with an uncached forward).
    sequence = prompts[0] + out.token_ids
    logits_TV, _ = jax.jit(model.forward, static_argnums=2)(
        tiny_chat.params, jnp.asarray([sequence[:-1]]), tiny_chat.config)
    start = len(prompts[0]) + n_call + n_forced
    greedy = np.argmax(np.asarray(logits_TV[0, start - 1:]), axis=-1).tolist()
    assert out.token_ids[n_call + n_forced:] == greedy
    assert len(out.token_ids) == MAX_NEW


@pytest.mark.parametrize("temperature", [0.0, 0.9])
def test_other_rows_are_not_disturbed_and_nothing_recompiles(tiny_chat, script, temperature):
    without, _ = _run(tiny_chat, script, tools=False, temperature=temperature)
    before = engine.compilations()
    with_tools, _ = _run(tiny_chat, script, tools=True, temperature=temperature)
    assert engine.compilations() == before  # the call and its forcing reuse the same executables
    assert with_tools[1].token_ids == without[1].token_ids
    assert with_tools[1].text == without[1].text
    # Without tools the calling row just goes on sampling after its call.
    assert with_tools[0].token_ids != without[0].token_ids


def _chatml():
    ranks = {bytes([i]): i for i in range(256)}
    enc = tiktoken.Encoding("chatml-bytes", pat_str=r"\S+|\s+", mergeable_ranks=ranks,
                            special_tokens={"<|endoftext|>": 256, "<|im_start|>": 257,
                                            "<|im_end|>": 258})
    template = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    return Model(None, None, enc, template, None, [258], False), enc


def test_chatml_text_calls_get_the_tool_message_of_the_template():
    chat_model, enc = _chatml()
    runner = ToolRunner(chat_model, [[{"role": "user", "content": "6*7?"}]], ["calculator"])
    assert enc.encode_ordinary(">")[0] in runner.pause_ids
    written = enc.encode_ordinary("Let me compute.\n<tool_call>\n" + CALL + "\n</tool_call>")
    assert runner.after(0, written[:-3]) == []  # not finished yet
    forced = runner.after(0, written)
    assert enc.decode(forced) == "<|im_end|>\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n"
    assert runner.calls[0][0]["result"] == "42"


def test_bad_calls_get_error_results_the_model_reads(tiny_chat):
    enc = tiny_chat.tokenizer
    runner = ToolRunner(tiny_chat, [[{"role": "user", "content": "hi"}]] * 3, ["calculator"])
    start, end = _special(enc, "<|tool_call_start|>"), _special(enc, "<|tool_call_end|>")
    for row, text in enumerate(["{not json", json.dumps({"name": "shell", "arguments": {}}),
                                json.dumps({"name": "calculator",
                                            "arguments": {"expression": "__import__('os')"}})]):
        forced = runner.after(row, [start] + enc.encode_ordinary(text) + [end])
        assert runner.calls[row][0]["result"].startswith("error: ")
        assert enc.decode(forced).startswith("<|assistant_end|><|tool_output_start|>error: ")


def test_tools_without_chat_or_unknown_tools_are_refused(tiny_chat):
    with pytest.raises(ValueError, match="tools need chat"):
        engine.generate_text(tiny_chat, "hi", tools=["calculator"], max_new_tokens=2)
    with pytest.raises(ValueError, match="unknown tool"):
        engine.generate_text(tiny_chat, "hi", chat=True, tools=["shell"], max_new_tokens=2)


def _cli(monkeypatch, capsys, tiny_chat, script, *argv):
    """`python -m infer generate ...` in this process, on the tiny model whose first row is
    scripted to call the calculator."""
    from infer.__main__ import main
    from infer.cli import args as cli_args

    monkeypatch.setattr(cli_args, "load_model", lambda source: tiny_chat)
    monkeypatch.setattr(engine, "decode_params", lambda m, weights="float32": m.params)
    monkeypatch.setattr(engine, "generate", functools.partial(engine.generate,
                                                              forward_fn=script[3]))
    assert main(["generate", "--model", "tiny", *argv]) == 0
    return capsys.readouterr()


def test_generate_cli_json_shows_the_tool_calls_and_results(monkeypatch, capsys, tiny_chat,
                                                            script):
    out = _cli(monkeypatch, capsys, tiny_chat, script, "--prompt", QUESTIONS[0], "--chat",
               "--tools", "calculator", "--temperature", "0", "--max-new-tokens", "80", "--json")
    result = json.loads(out.out)
    assert result["tool_calls"] == [{"name": "calculator", "arguments": {"expression": "6*7"},
                                     "result": "42"}]
    assert len(result["sampled"]) == len(result["token_ids"]) == 80
    assert result["sampled"].count(False) == 6  # the tool message's ids, forced
    assert "<|tool_output_start|>42<|tool_output_end|>" in result["text"]


def test_generate_cli_refuses_unknown_tools_and_tools_without_chat(monkeypatch, capsys,
                                                                   tiny_chat, script):
    for argv, expected in [(["--chat", "--tools", "shell"], "unknown tool shell"),
                           (["--tools", "calculator"], "--tools needs --chat")]:
        with pytest.raises(SystemExit) as exit_:
            _cli(monkeypatch, capsys, tiny_chat, script, "--prompt", "hi", *argv)
        assert exit_.value.code == 2
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err


def test_chat_repl_keeps_the_tool_call_and_its_result_in_the_conversation(monkeypatch, capsys,
                                                                          tiny_chat, script):
    from infer.cli.chat import Session

    monkeypatch.setattr(engine, "decode_params", lambda m, weights="float32": m.params)
    monkeypatch.setattr(engine, "generate", functools.partial(engine.generate,
                                                              forward_fn=script[3]))
    sampling = dict(max_new_tokens=80, temperature=0.0, top_k=0, top_p=1.0, seed=0,
                    stop_strings=[], weights="float32")
    session = Session(tiny_chat, sampling, None, ["calculator"])
    session.reply(QUESTIONS[0])
    user, call, tool, answer = session.history
    assert user == {"role": "user", "content": QUESTIONS[0]}
    assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"expression": "6*7"}
    assert tool["role"] == "tool" and tool["content"] == "42"
    # The final answer is only what the model wrote after the tool's output.
    assert answer["role"] == "assistant" and "<|tool_output" not in answer["content"]
    assert "42" in capsys.readouterr().out  # the user sees the tool's result as it streams


def test_chatml_row_writing_a_text_call_gets_the_tool_message_forced():
    """The <tool_call> text path through the engine: the loop stops at tokens holding '>',
    the runner finds the finished call, and the template's tool message is forced in."""
    chat_model, enc = _chatml()
    cfg = dataclasses.replace(model.preset("tiny"), vocab_size=enc.n_vocab, max_seq_len=256)
    chat_model = dataclasses.replace(chat_model, config=cfg,
                                     params=model.init(cfg, jax.random.key(1)))
    conversation = [{"role": "user", "content": "6*7?"}]
    prompt = engine.prompt_ids(chat_model, conversation, chat=True)
    call_ids = enc.encode_ordinary("<tool_call>\n" + CALL + "\n</tool_call>")
    script_BL = np.full((1, 256), -1, np.int32)
    script_BL[0, len(prompt) - 1:len(prompt) - 1 + len(call_ids)] = call_ids
    runner = ToolRunner(chat_model, [conversation], ["calculator"])
    gen = engine.generate(chat_model.params, cfg, [prompt], max_new_tokens=120,
                          decode_fn=enc.decode, forward_fn=_scripted_forward(script_BL),
                          tools=runner)
    expected = enc.encode("<|im_end|>\n<|im_start|>tool\n42<|im_end|>\n<|im_start|>assistant\n",
                          allowed_special="all")
    out = gen[0]
    assert out.token_ids[:len(call_ids) + len(expected)] == call_ids + expected
    assert out.sampled[:len(call_ids) + len(expected)] == ([True] * len(call_ids)
                                                           + [False] * len(expected))
    assert runner.calls[0][0]["result"] == "42"
