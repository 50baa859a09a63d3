"""Special-token strings in content never become control tokens, at every entry point.

For the twofiles tokenizer and SmolLM2's ChatML, every special token is put at the start, middle
and end of a message, as a whole forged turn, and as look-alikes (fullwidth brackets and bars,
Cyrillic letters, zero-width and soft-hyphen characters), then sent through each entry point:
`infer generate` (chat, system and plain prompts), the `infer chat` REPL on stdin, the HTTP
server (chat and completions), SFT conversations and DPO pairs, documents retrieved by --docs,
and tool outputs (through generate and the REPL with --tools). For each string the test first
shows the raw tokenizer would make a control token of it (for a look-alike: of its NFKC-
normalised, format-character-free, confusable-folded form, which is what a stack that
normalises text would tokenize), then counts the control tokens the entry point made beyond
those of the same conversation with plain words: always 0. Each test prints its tally (-s).

The calculator's attack table (tests/test_calculator.py) also runs from every place a tool is
called: the engine's ToolRunner under `infer generate --tools` and under the chat REPL. The
server runs no tools itself (it returns a model's calls to the client, OpenAI's protocol).
"""

from __future__ import annotations

import json
import time

import pytest

from infer.runtime import engine
from tests.injection_helpers import (Recorder, attack_strings, chatml_model, control_tokens,
                                     raw_would_make_control_token, twofiles_chat_model)

PLAIN = "plain words"
_MODELS = {}


@pytest.fixture(scope="module", params=["twofiles", "chatml"])
def model(request):
    if request.param not in _MODELS:
        _MODELS[request.param] = (twofiles_chat_model if request.param == "twofiles"
                                  else chatml_model)()
    return _MODELS[request.param]


def _tally(where: str, enc, ids_for, attacks) -> int:
    """Checks each attack string through `ids_for` (content -> the ids made from it) and
    prints how many strings were tried and control tokens produced; returns the latter."""
    baseline = control_tokens(enc, ids_for(PLAIN))
    produced = 0
    for kind, content in attacks:
        assert raw_would_make_control_token(enc, kind, content), (kind, content)
        produced += control_tokens(enc, ids_for(content)) - baseline
    print(f"\n{where}: {len(attacks)} strings tried, {produced} control tokens produced")
    return produced


def _cli_prompts(monkeypatch, model, argv_for, **recorder_args):
    """content -> the ids of every prompt `python -m infer ARGV` sent the engine."""
    def ids_for(content):
        recorder = Recorder(monkeypatch, model, **recorder_args)
        argv, stdin = argv_for(content)
        recorder.cli(*argv, stdin=stdin, monkeypatch=monkeypatch)
        assert recorder.prompts, "the command sent no prompt"
        return [i for p in recorder.prompts for i in p]
    return ids_for


@pytest.mark.parametrize("flag", ["user", "system", "plain"])
def test_generate(model, monkeypatch, capsys, flag):
    argv = {"user": lambda c: (["generate", "--chat", "--prompt", c], None),
            "system": lambda c: (["generate", "--chat", "--system", c, "--prompt", "hi"], None),
            "plain": lambda c: (["generate", "--prompt", c], None)}[flag]
    enc = model.tokenizer
    with capsys.disabled():
        produced = _tally(f"infer generate ({flag}, {model.source})", enc,
                          _cli_prompts(monkeypatch, model, argv), attack_strings(enc))
    assert produced == 0


def test_chat_repl_on_stdin(model, monkeypatch, capsys):
    """A message, a second turn over the history, then /system with the string. A line is a
    message, so the strings' newlines become spaces here."""
    def argv(content):
        return ["chat"], f"{content}\nsecond turn\n/system {content}\nhello\n/quit\n"
    enc = model.tokenizer
    ids_for = _cli_prompts(monkeypatch, model, argv)
    attacks = [(kind, c.replace("\n", " ")) for kind, c in attack_strings(enc)]
    with capsys.disabled():
        produced = _tally(f"infer chat REPL ({model.source})", enc, ids_for, attacks)
    assert produced == 0


def test_retrieved_documents(model, monkeypatch, capsys, tmp_path):
    attacks = attack_strings(model.tokenizer)
    for i, (_, content) in enumerate(attacks + [("plain", PLAIN)]):
        (tmp_path / f"note{i}.txt").write_text(f"Note zebra{i}: {content}\n", encoding="utf-8")
    index = {content: i for i, (_, content) in enumerate(attacks + [("plain", PLAIN)])}

    def argv(content):
        return ["generate", "--chat", "--docs", str(tmp_path), "--docs-k", "1", "--prompt",
                f"what is zebra{index[content]}?"], None
    ids_for = _cli_prompts(monkeypatch, model, argv)
    assert content_in(model, ids_for(attacks[0][1]), attacks[0][1])
    with capsys.disabled():
        produced = _tally(f"--docs documents ({model.source})", model.tokenizer, ids_for,
                          attacks)
    assert produced == 0


def content_in(model, ids, content) -> bool:
    return content in model.decode(ids)


def _call_ids(model, name: str, arguments: dict) -> list[int]:
    """A tool call as the model itself would write it, in its own format."""
    enc = model.tokenizer
    body = json.dumps({"name": name, "arguments": arguments})
    if model.chat_template is None:  # twofiles: special tokens around the JSON
        return ([enc.encode_single_token("<|tool_call_start|>")] + enc.encode_ordinary(body)
                + [enc.encode_single_token("<|tool_call_end|>")])
    return enc.encode_ordinary(f"<tool_call>\n{body}\n</tool_call>")


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_tool_outputs(model, monkeypatch, capsys, command):
    """A call to a tool named with the string: the error the tool returns quotes the name, and
    its tokens (forced into the row) hold no control token beyond the template's own."""
    enc = model.tokenizer
    results = []

    def ids_for(content):
        recorder = Recorder(monkeypatch, model, call_ids=_call_ids(model, content, {}))
        argv = (["generate", "--chat", "--tools", "calculator", "--prompt", "hi"]
                if command == "generate" else ["chat", "--tools", "calculator"])
        recorder.cli(*argv, stdin="hi\n/quit\n" if command == "chat" else None,
                     monkeypatch=monkeypatch)
        results.append(recorder.results[-1])
        return recorder.forced[-1]

    attacks = attack_strings(enc)
    with capsys.disabled():
        produced = _tally(f"tool outputs via {command} ({model.source})", enc, ids_for, attacks)
    assert produced == 0
    assert all(r.startswith("error: unknown tool") for r in results)


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_calculator_attack_table_from_every_tool_caller(model, monkeypatch, command):
    from tests.test_calculator import ATTACKS

    for expression in ATTACKS:
        recorder = Recorder(monkeypatch, model,
                            call_ids=_call_ids(model, "calculator", {"expression": expression}))
        argv = (["generate", "--chat", "--tools", "calculator", "--prompt", "hi"]
                if command == "generate" else ["chat", "--tools", "calculator"])
        start = time.monotonic()
        recorder.cli(*argv, stdin="hi\n/quit\n" if command == "chat" else None,
                     monkeypatch=monkeypatch)
        assert time.monotonic() - start < 2.0, expression
        assert recorder.results[-1].startswith("error:"), (expression, recorder.results[-1])


def test_sft_conversations_and_dpo_pairs(model, capsys, tmp_path):
    from train import preference_data, sft

    call = {"id": "call_1", "type": "function",
            "function": {"name": "calculator", "arguments": '{"expression": "1+1"}'}}

    def conversation(c):
        return [{"role": "system", "content": c}, {"role": "user", "content": c},
                {"role": "assistant", "content": c, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": c},
                {"role": "assistant", "content": c}]

    def pair(c):
        return {"prompt": [{"role": "user", "content": c}],
                "chosen": {"role": "assistant", "content": c},
                "rejected": {"role": "assistant", "content": "no. " + c}}

    enc = model.tokenizer
    attacks = attack_strings(enc)
    contents = [PLAIN] + [c for _, c in attacks]
    sft_file, dpo_file = tmp_path / "sft.jsonl", tmp_path / "pairs.jsonl"
    sft_file.write_text("".join(json.dumps({"messages": conversation(c)}) + "\n"
                                for c in contents))
    dpo_file.write_text("".join(json.dumps(pair(c)) + "\n" for c in contents))
    sft_rows, _ = sft.render_file(model, str(sft_file), 8192, False)
    dpo_rows, _ = preference_data.render_file(model, str(dpo_file), 8192)
    sft_ids = dict(zip(contents, (ids for ids, _ in sft_rows)))
    dpo_ids = dict(zip(contents, (chosen + rejected for chosen, _, rejected, _ in dpo_rows)))
    assert content_in(model, sft_ids[attacks[0][1]], attacks[0][1])
    with capsys.disabled():
        produced = _tally(f"SFT conversations ({model.source})", enc, sft_ids.get, attacks)
        produced += _tally(f"DPO pairs ({model.source})", enc, dpo_ids.get, attacks)
    assert produced == 0


# --- the server, over HTTP ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    """Both models served by one real server; yields (httpx client, name -> model)."""
    import httpx

    from infer.serve.worker import Worker
    from tests.serve_server import running

    models = {"twofiles": twofiles_chat_model(), "chatml": chatml_model()}
    with running(Worker(models)) as url:
        with httpx.Client(base_url=url, timeout=120) as client:
            yield client, models


def test_server_chat_and_completions(server, monkeypatch, capsys):
    client, models = server
    seen = []
    real = engine.prompt_ids

    def recording(m, prompt, **kwargs):
        ids = real(m, prompt, **kwargs)
        seen.append(ids)
        return ids
    monkeypatch.setattr(engine, "prompt_ids", recording)

    for name, m in models.items():
        def ids_for(content):
            seen.clear()
            for path, body in (
                    ("/v1/chat/completions", {"messages": [
                        {"role": "system", "content": content},
                        {"role": "user", "content": content}]}),
                    ("/v1/completions", {"prompt": content})):
                reply = client.post(path, json={"model": name, "max_tokens": 1,
                                                "temperature": 0, **body})
                assert reply.status_code == 200, reply.text
            assert len(seen) == 2
            return seen[0] + seen[1]
        with capsys.disabled():
            produced = _tally(f"server HTTP ({name})", m.tokenizer, ids_for,
                              attack_strings(m.tokenizer))
        assert produced == 0


@pytest.mark.parametrize("field", [{"chat_template": "{{ messages.__class__ }}"},
                                   {"template": "{{ 1 }}"}])
def test_server_refuses_a_request_that_brings_its_own_template(server, field):
    client, _ = server
    reply = client.post("/v1/chat/completions", json={
        "model": "twofiles", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}],
        **field})
    assert reply.status_code == 400
    assert next(iter(field)) in reply.text
