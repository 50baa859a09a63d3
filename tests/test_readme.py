"""Every command the README shows works as written.

The README's code blocks are read as a user would copy them. Every `python -m PACKAGE ...` line
is parsed by that package's own command line (the parser as it is now, abbreviations refused),
so a README command with a removed or misspelt flag fails here. The cheap ones (the model's
counts, `--help`, a scaling fit of the shipped sweep and a plan from it) are also run, from a
copy of the repository root; the expensive ones (training, sweeps, SmolLM2) only parsed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()

# Commands of these kinds are run, unless they read a directory under runs/ (the output of a
# training run or a sweep, which the test does not make).
CHEAP = (("model",), ("scaling", "fit"), ("scaling", "plan"))
NEEDS_A_RUN = re.compile(r"(^|\s|=)runs/")


SHELL = ("", "bash", "sh")  # untagged blocks are commands too; the diagram is tagged `text`


def code_blocks(text: str, *langs: str) -> list[str]:
    """The bodies of the fenced blocks tagged one of `langs` ('' for untagged)."""
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S)
            if m.group(1) in langs]


def shell_commands(block: str) -> list[list[str]]:
    """Each command of a shell block as argv: continuations joined, comments dropped, `a && b`
    split in two."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        argv, current = shlex.split(line, comments=True), []
        for word in argv + ["&&"]:
            if word != "&&":
                current.append(word)
            elif current:
                commands.append(current)
                current = []
    return commands


COMMANDS = [argv for block in code_blocks(README, *SHELL) for argv in shell_commands(block)]
PYTHON_M = [argv for argv in COMMANDS if argv[:2] == ["python", "-m"]]


def command_id(argv: list[str]) -> str:
    return " ".join(argv)[:90]


class _Parsed(Exception):
    """Raised in place of running a command once its arguments have parsed."""


def _no_abbreviations(parser: argparse.ArgumentParser) -> None:
    # argparse would take `--max-new` for `--max-new-tokens`; the README must spell flags out.
    parser.allow_abbrev = False
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _no_abbreviations(sub)


def parse_only(argv: list[str]) -> tuple[int | None, str]:
    """Run PACKAGE's `main(args)` until its parser has parsed them: (argparse's exit status or
    None when they parsed, what it printed)."""
    package, args = argv[2], argv[3:]
    module = importlib.import_module(package)  # a package runs its __main__, a module itself
    if hasattr(module, "__path__"):
        module = importlib.import_module(f"{package}.__main__")
    main = module.main
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(parser, *a, **kw):
        _no_abbreviations(parser)
        original(parser, *a, **kw)
        raise _Parsed

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        argparse.ArgumentParser.parse_args = parse_then_stop
        try:
            main(args)
        except _Parsed:
            return None, out.getvalue()
        except SystemExit as e:  # argparse's error (2) or --help (0)
            return e.code, out.getvalue()
        finally:
            argparse.ArgumentParser.parse_args = original
    raise AssertionError(f"{command_id(argv)}: main returned before parsing its arguments")


def test_the_readme_shows_the_commands_of_every_package():
    assert {argv[2] for argv in PYTHON_M} >= {"model", "train", "infer", "scaling"}


@pytest.mark.parametrize("argv", PYTHON_M, ids=command_id)
def test_every_python_command_parses(argv):
    status, output = parse_only(argv)
    wants_help = "--help" in argv or "-h" in argv
    assert status == (0 if wants_help else None), f"{command_id(argv)}:\n{output}"


def test_a_misspelt_or_abbreviated_flag_fails_the_check():
    assert parse_only(["python", "-m", "model", "--presett", "tiny"])[0] == 2
    assert parse_only(["python", "-m", "infer", "generate", "--model", "m", "--prompt", "p",
                       "--max-new", "5"])[0] == 2


def _cheap(argv: list[str]) -> bool:
    kind = tuple(argv[2:4])
    if "--help" in argv:
        return True
    return any(kind[:len(c)] == c for c in CHEAP) and not NEEDS_A_RUN.search(" ".join(argv))


@pytest.fixture(scope="module")
def repo_copy(tmp_path_factory):
    """A directory that looks like the repository root (its entries linked), so commands with
    relative paths run as written and what they write lands here."""
    root = tmp_path_factory.mktemp("readme")
    for entry in REPO.iterdir():
        if not entry.name.startswith(".") and entry.name not in ("runs", "data"):
            (root / entry.name).symlink_to(entry)
    return root


def _run_in_order(argv_list: list[list[str]], cwd: Path) -> None:
    for argv in argv_list:
        done = subprocess.run([sys.executable, *argv[1:]], cwd=cwd, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, f"{command_id(argv)}:\n{done.stdout}\n{done.stderr}"


def test_the_cheap_commands_run(repo_copy):
    _run_in_order([a for a in PYTHON_M if _cheap(a) and a[2] != "scaling"], repo_copy)


@pytest.mark.slow  # ~20 s: the fit's 200 bootstrap resamples
def test_the_scaling_fit_and_plan_run(repo_copy):
    """In README order, so `scaling plan --fit fit.json` reads what the fit before it wrote."""
    scaling = [a for a in PYTHON_M if _cheap(a) and a[2] == "scaling"]
    assert any(a[3] == "fit" for a in scaling), "the README shows no runnable scaling fit"
    _run_in_order(scaling, repo_copy)


def _flag(argv: list[str], name: str) -> str | None:
    return argv[argv.index(name) + 1] if name in argv else None


def test_demo_generations_fit_the_demo_context():
    """A prompt and its new tokens must fit the demo model's context: each token is at least
    one byte, so bytes + BOS + new tokens bounds what the engine needs."""
    context = json.loads((REPO / "train" / "configs" / "demo.json").read_text())
    context = context["model"]["max_seq_len"]
    demo = [argv for argv in PYTHON_M if argv[2:4] == ["infer", "generate"]
            and _flag(argv, "--model") == "runs/demo"]
    assert demo, "the README shows no generation from the demo run"
    for argv in demo:
        prompt, new = _flag(argv, "--prompt"), int(_flag(argv, "--max-new-tokens") or 64)
        assert len(prompt.encode()) + 1 + new <= context, command_id(argv)


def test_make_commands_are_the_two_setup_lines():
    """`make demo` and `make test` each on a line of its own, and no other make command."""
    makes = [argv for argv in COMMANDS if argv[0] == "make"]
    assert sorted(" ".join(m) for m in makes) == ["make demo", "make test"]
    lines = {line.strip() for block in code_blocks(README, *SHELL) for line in block.splitlines()}
    assert {"make demo", "make test"} <= lines
    for argv in makes:  # the targets exist (a dry run executes nothing)
        done = subprocess.run(["make", "-n", *argv[1:]], cwd=REPO, capture_output=True,
                              text=True)
        assert done.returncode == 0, done.stderr


def test_run_c_flags_are_its_own():
    source = (REPO / "infer" / "formats" / "run.c").read_text()
    usage = next(line for line in source.splitlines() if "usage: run " in line)
    known = set(re.findall(r"-\w\b", usage))
    runs = [argv for argv in COMMANDS if argv[0].endswith("/run")]
    assert runs, "the README shows no run.c command"
    for argv in runs:
        assert {a for a in argv if re.fullmatch(r"-\w", a)} <= known, command_id(argv)


def test_python_blocks_run_on_eight_simulated_devices():
    """The README's Python blocks run as a script, with the XLA_FLAGS the README names."""
    assert "XLA_FLAGS=--xla_force_host_platform_device_count=8" in README
    blocks = code_blocks(README, "python")
    assert blocks
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
           "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO)}
    for block in blocks:
        done = subprocess.run([sys.executable, "-c", block], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, f"{block}\n{done.stderr}"
