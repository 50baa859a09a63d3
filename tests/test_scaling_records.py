"""Run records: CSV/JSON round trips and clear errors for bad input."""
import pytest

from scaling import records
from scaling.records import RecordError, RunRecord


def write(tmp_path, text, name="runs.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def test_csv_roundtrip_and_tokens_from_flops(tmp_path):
    runs = [RunRecord(params=1e6, tokens=2e7, loss=3.5, flops=1.3e14, budget=1e14, name="a"),
            RunRecord(params=2e6, tokens=1e7, loss=3.4)]
    path = str(tmp_path / "r.csv")
    records.write_csv(path, runs)
    back = records.read_csv(path)
    assert [(r.params, r.tokens, r.loss, r.flops, r.budget) for r in back] == \
        [(1e6, 2e7, 3.5, 1.3e14, 1e14), (2e6, 1e7, 3.4, None, None)]
    # No tokens column: D = C / 6N (the convention of Chinchilla's published points).
    p = write(tmp_path, "params,flops,loss\n1000,6e9,4.0\n")
    assert records.read_csv(p)[0].tokens == pytest.approx(1e6)
    records.write_json(str(tmp_path / "r.json"), runs)
    assert records.read_json(str(tmp_path / "r.json"))[0].budget == 1e14


@pytest.mark.parametrize("body, message", [
    ("params,tokens,loss\n1e6,2e7,-3.0\n", "line 2: 'loss' must be positive"),
    ("params,tokens,loss\n1e6,,3.0\n", "line 2: missing value for 'tokens'"),
    ("params,tokens,loss\n1e6,2e7,3.0\n1e6,abc,3.0\n", "line 3: 'tokens' must be a number"),
    ("params,tokens,loss\n0,2e7,3.0\n", "'params' must be positive"),
    ("params,tokens,loss\nnan,2e7,3.0\n", "'params' must be positive and finite"),
    ("params,loss\n1e6,3.0\n", "missing column"),
    ("params,tokens,loss\n", "no data rows"),
])
def test_bad_csv_is_refused_with_the_line(tmp_path, body, message):
    with pytest.raises(RecordError, match=message):
        records.read_csv(write(tmp_path, body))


def test_missing_file_and_too_few_points(tmp_path):
    with pytest.raises(RecordError, match="no such file"):
        records.read_csv(str(tmp_path / "nope.csv"))
    runs = [RunRecord(params=1e6 * i, tokens=1e7, loss=3.0) for i in range(1, 5)]
    with pytest.raises(RecordError, match="4 run.*needs at least 5"):
        records.arrays(runs)


def test_atomic_write_leaves_no_partial_file(tmp_path):
    path = tmp_path / "fit.json"
    path.write_text('{"old": true}')
    with pytest.raises(TypeError):
        records.write_json(str(path), {"bad": object()})
    assert path.read_text() == '{"old": true}'
    assert [p.name for p in tmp_path.iterdir()] == ["fit.json"]
