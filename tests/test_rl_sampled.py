"""experiments.rl_batch.sampled: sampled pass@1 (the mean over k samples per problem), the
paired gain and its bootstrap interval, and shared sampling seeds between the two models."""

import math

import numpy as np
import pytest

from evals.tasks import Item
from experiments.rl_batch import sampled


def test_paired_gain_matches_a_hand_computation():
    # 3 problems x 4 samples. By hand: base pass@1 per problem 1/4, 2/4, 0 (mean 0.25); the
    # model 2/4, 3/4, 1/4 (mean 0.5); every problem gains exactly 0.25, so every bootstrap
    # resample's mean is 0.25 and the interval is the point [0.25, 0.25].
    base = [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]]
    model = [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 1]]
    r = sampled.paired_gain(base, model, resamples=2000)
    assert r["base_pass1"] == pytest.approx(0.25) and r["pass1"] == pytest.approx(0.5)
    assert r["gain"] == pytest.approx(0.25)
    assert r["ci"] == pytest.approx([0.25, 0.25])
    assert r["p_le_0"] == 0.0 and r["n"] == 3 and r["k"] == 4
    assert (r["problems_gained"], r["problems_lost"]) == (3, 0)
    # pass@4: the base has a correct sample on 2 of 3 problems, the model on all 3.
    assert r["base_pass_at_k"] == pytest.approx(2 / 3) and r["pass_at_k"] == 1.0
    assert r["per_problem"] == pytest.approx([0.5, 0.75, 0.25])


def test_interval_is_the_normal_one_for_many_problems():
    # With 2,000 problems the bootstrap's percentile interval of the mean difference is the
    # central limit theorem's mean +- 1.96 sd / sqrt(n), to within a few percent of its width.
    rng = np.random.default_rng(1)
    base = (rng.random((2000, 8)) < rng.random((2000, 1))).astype(float)
    model = np.where(rng.random((2000, 8)) < 0.1, 1.0, base)
    r = sampled.paired_gain(base, model)
    d_N = model.mean(1) - base.mean(1)
    half = 1.959964 * d_N.std(ddof=1) / math.sqrt(len(d_N))
    assert r["gain"] == pytest.approx(d_N.mean())
    assert r["ci"][0] == pytest.approx(d_N.mean() - half, abs=0.05 * half)
    assert r["ci"][1] == pytest.approx(d_N.mean() + half, abs=0.05 * half)


def test_unequal_problems_or_k_are_refused_by_shape():
    with pytest.raises(ValueError, match=r"\(2, 4\) and \(2, 3\)"):
        sampled.paired_gain([[1, 0, 0, 0]] * 2, [[1, 0, 0]] * 2)


class Task:
    """A grader for the stub: a completion is right when it says "right"."""

    name = "stub"

    def grade(self, item, completion):
        return float(completion == "right")

    def answer(self, completion):
        return completion


def stub_model(quality: float):
    """A harness Generator whose row j of a batch seeded s is right when the j-th uniform draw
    of seed s is below `quality`: one seed, one set of random numbers, as the engine's key."""
    def generate(conversations, seed):
        u = np.random.default_rng(seed).random(len(conversations))
        return [("right" if x < quality else "wrong", True) for x in u]
    return generate


def test_both_models_draw_the_same_random_numbers():
    # 3 problems x 4 samples in batches of 4 rows: batch b holds problem b's samples and is
    # seeded 10 + 4b (the harness's seed + first row). By hand from those draws, each model's
    # per-problem pass@1; and because the draws are shared, the better stub is right wherever
    # the worse one is, so it loses no problem: the paired difference has none of the
    # sampling noise that independent seeds would add.
    items = [Item(prompt=[{"role": "user", "content": str(i)}], reference="") for i in range(3)]
    scores = {q: sampled.sample_scores(stub_model(q), Task(), items, k=4, seed=10,
                                       batch_size=4, progress=False) for q in (0.3, 0.6)}
    for q, s in scores.items():
        expected = [(np.random.default_rng(10 + 4 * b).random(4) < q).mean() for b in range(3)]
        assert sampled.pass1_per_problem(s) == pytest.approx(expected)
    r = sampled.paired_gain(scores[0.3], scores[0.6], resamples=1000)
    assert r["problems_lost"] == 0 and r["gain"] > 0


def test_cli_names_a_missing_model(tmp_path, capsys):
    with pytest.raises(SystemExit):
        sampled.main(["--base", str(tmp_path), "--model", str(tmp_path / "nope")])
    assert "nope does not exist" in capsys.readouterr().err
