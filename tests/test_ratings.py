"""Arena ratings: known strengths recovered from simulated battles, ties half, bad files refused."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from evals.ratings import Battle, BattleError, online_elo, rate, read_battles

TRUE_ELO = {"weak": 1000.0, "mid": 1100.0, "strong": 1200.0}


def simulate(n: int, true_elo: dict, seed: int) -> list[Battle]:
    """Battles between random distinct pairs, won with Bradley–Terry's probability. (No ties:
    ties that happen regardless of strength, counted half, would pull the fit together.)"""
    rng = np.random.default_rng(seed)
    names = list(true_elo)
    battles = []
    for _ in range(n):
        i, j = rng.choice(len(names), 2, replace=False)
        a, b = names[i], names[j]
        p_a = 1 / (1 + 10 ** ((true_elo[b] - true_elo[a]) / 400))
        battles.append(Battle(a, b, "model_a" if rng.random() < p_a else "model_b"))
    return battles


def test_known_strengths_are_recovered_within_their_intervals():
    table = rate(simulate(3000, TRUE_ELO, seed=0), bootstrap=300, anchor="weak")
    assert table.models == ["strong", "mid", "weak"]
    for model, rating, (lo, hi) in zip(table.models, table.rating, table.ci95):
        if model == "weak":
            assert rating == lo == hi == 1000.0  # the anchor is exact in every resample
            continue
        assert lo <= TRUE_ELO[model] <= hi, (model, rating, lo, hi)
        assert lo < rating < hi
        # ~1000 battles a pair: the interval is a few tens of points, neither 0 nor hundreds
        assert 15 < hi - lo < 80, (model, lo, hi)


def test_mean_anchor_puts_the_mean_at_1000_and_counts_battles():
    battles = simulate(300, TRUE_ELO, seed=1)
    table = rate(battles, bootstrap=0)
    assert np.mean(table.rating) == pytest.approx(1000.0, abs=1e-6)
    assert sum(table.battles) == 2 * len(battles)


def test_a_tie_counts_half_a_win_to_each_side():
    # a: 2 wins and 2 ties in every 4, i.e. 3 wins in 4: Bradley–Terry's gap is 400 log10(3/1)
    for tie in ("tie", "tie (bothbad)"):
        battles = [Battle("a", "b", "model_a"), Battle("b", "a", "model_b"),
                   Battle("a", "b", tie), Battle("b", "a", tie)] * 10
        table = rate(battles, bootstrap=0)
        gap = table.rating[0] - table.rating[1]
        assert table.models == ["a", "b"]
        assert gap == pytest.approx(400 * math.log10(3), abs=1.0)
        assert table.win_rate[0, 1] == 0.75 and table.win_rate[1, 0] == 0.25


def test_only_ties_give_equal_ratings():
    table = rate([Battle("a", "b", "tie"), Battle("b", "c", "tie (bothbad)")] * 5, bootstrap=0)
    assert table.rating == pytest.approx([1000.0] * 3, abs=1e-3)


def test_a_model_that_always_wins_ranks_first_with_a_finite_rating():
    battles = ([Battle("champ", "x", "model_a"), Battle("y", "champ", "model_b")] * 10
               + simulate(100, {"x": 1000.0, "y": 1000.0}, seed=2))
    table = rate(battles, bootstrap=50)
    assert table.models[0] == "champ"
    assert all(math.isfinite(r) for r in table.rating)
    assert table.ci95[0][0] > max(hi for _, hi in table.ci95[1:])


def test_win_rate_matrix_is_per_pair_and_nan_where_they_never_met():
    battles = [Battle("a", "b", "model_a")] * 3 + [Battle("b", "a", "model_a"),
                                                   Battle("b", "c", "model_a")]
    table = rate(battles, bootstrap=0)
    i = {m: k for k, m in enumerate(table.models)}
    assert table.win_rate[i["a"], i["b"]] == 0.75
    assert table.win_rate[i["b"], i["a"]] == 0.25
    assert table.win_rate[i["b"], i["c"]] == 1.0
    assert math.isnan(table.win_rate[i["a"], i["c"]])
    assert table.to_json()["win_rate"]["matrix"][i["a"]][i["c"]] is None


def test_online_elo_moves_k_over_2_on_a_first_battle_between_equals():
    elo = online_elo([Battle("a", "b", "model_a")])
    assert elo == {"a": 1002.0, "b": 998.0}
    assert online_elo([Battle("a", "b", "tie")]) == {"a": 1000.0, "b": 1000.0}


def test_json_rows_carry_the_fields_the_issue_names():
    table = rate(simulate(200, TRUE_ELO, seed=3), bootstrap=20)
    rows = json.loads(json.dumps(table.to_json()))["ratings"]
    assert [r["model"] for r in rows] == table.models
    assert set(rows[0]) == {"model", "rating", "ci95", "battles", "elo_online"}


def test_read_battles_reads_fastchat_lines_and_ignores_extra_keys(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"model_a": "x", "model_b": "y", "winner": "tie", "tstamp": 1.5}\n\n'
                    '{"model_a": "y", "model_b": "x", "winner": "model_b"}\n')
    assert read_battles(path) == [Battle("x", "y", "tie"), Battle("y", "x", "model_b")]


@pytest.mark.parametrize("bad_line, says", [
    ("{not json", "not JSON"),
    ('["x", "y", "tie"]', "expected a JSON object"),
    ('{"model_a": "x", "model_b": "y", "winner": "a"}', "'winner' must be one of"),
    ('{"model_a": "x", "model_b": "y"}', "'winner' must be one of"),
    ('{"model_a": "", "model_b": "y", "winner": "tie"}', "'model_a' must be a non-empty"),
    ('{"model_a": "x", "model_b": 3, "winner": "tie"}', "'model_b' must be a non-empty"),
    ('{"model_a": "x", "model_b": "x", "winner": "tie"}', "cannot battle itself"),
])
def test_a_bad_battle_line_is_refused_with_file_and_line(tmp_path, bad_line, says):
    path = tmp_path / "b.jsonl"
    good = '{"model_a": "x", "model_b": "y", "winner": "model_a"}'
    path.write_text(f"{good}\n\n{bad_line}\n{good}\n")
    with pytest.raises(BattleError) as e:
        read_battles(path)
    assert str(e.value).startswith(f"{path}:3: ")
    assert says in str(e.value)


def test_an_empty_battle_file_is_refused(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text("\n")
    with pytest.raises(BattleError, match="no battles"):
        read_battles(path)


def test_a_binary_file_is_refused_as_not_text(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_bytes(b'{"model_a": "x", "model_b": "y", "winner": "tie"}\n\x89PNG\xff\n')
    with pytest.raises(BattleError, match=f"^{path}:2: not UTF-8 text"):
        read_battles(path)
