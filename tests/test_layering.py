"""DESIGN.md's layering: imports point down only (model <- infer <- evals <- train <- scaling).

Reads every module of every package with `ast` (imports inside functions count too: a lazy
import is still an arrow) and fails on any arrow the table does not allow."""

import ast
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
DESIGN = REPO.parent / "shared" / "DESIGN.md"

# DESIGN.md's table, package -> the packages of ours it may import.
ALLOWED = {"model": set(), "infer": {"model"}, "evals": {"model", "infer"},
           "train": {"model", "infer", "evals"}, "scaling": {"model", "train"}}


def imports_of(pkg: str, root: pathlib.Path = REPO):
    """(file, line, top-level package) for every absolute import in package `pkg`."""
    for path in sorted((root / pkg).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                yield path.relative_to(root), node.lineno, name.split(".")[0]


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_imports_point_down_only(pkg):
    bad = [f"{f}:{line} imports {top}" for f, line, top in imports_of(pkg)
           if top in ALLOWED and top != pkg and top not in ALLOWED[pkg]]
    assert not bad, f"{pkg} may import only {sorted(ALLOWED[pkg])}:\n" + "\n".join(bad)


def test_the_checker_sees_a_forbidden_arrow(tmp_path):
    """The walk finds imports inside functions, so a lazy `from train import x` in infer fails."""
    (tmp_path / "infer").mkdir()
    (tmp_path / "infer" / "m.py").write_text("def f():\n    from train import checkpoint\n")
    assert [(str(f), line, top) for f, line, top in imports_of("infer", tmp_path)] == [
        ("infer/m.py", 2, "train")]


@pytest.mark.skipif(not DESIGN.exists(), reason="DESIGN.md is kept beside the repository")
def test_table_is_designs():
    rows = re.findall(r"^\| `(\w+)/` \| ([^|]+) \|", DESIGN.read_text(), re.M)
    table = {pkg: set(re.findall(r"`(\w+)`", may)) for pkg, may in rows}
    assert table == ALLOWED


# Above the table: experiments drive training and evaluation together (DESIGN: "sit above both,
# as scaling's sweeps do"); benchmarks and notebooks import anything. Nothing imports them.
ABOVE = {"experiments", "benchmarks", "notebooks"}


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_nothing_imports_what_sits_above(pkg):
    bad = [f"{f}:{line} imports {top}" for f, line, top in imports_of(pkg) if top in ABOVE]
    assert not bad, f"{pkg} may not import {sorted(ABOVE)}:\n" + "\n".join(bad)
