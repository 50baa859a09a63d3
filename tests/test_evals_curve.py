"""System-2 curves: hand-computed majority@n and best-of-n, the subset estimators against brute
force over every ordered draw, the oracle curve never losing accuracy beyond its interval, a
reward model ranking the samples, and the command's JSON, table and plot."""

import itertools
import json
import math

import numpy as np
import pytest

from evals import __main__ as evals_main
from evals import cli_curve, curve, stats, tasks
from tests.test_evals_harness import scripted
from tests.test_export_common import tiny_twofiles_model

# 3 problems x 4 samples. A: two right "7", two wrong "8". B: three right "5", one wrong "6".
# C: reference "4"; one sample says "4", one "3", two give no answer (cut off or none).
ANSWERS = [["7", "7", "8", "8"], ["5", "5", "5", "6"], [None, "3", "4", None]]
SCORES = [[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 0]]


def test_majority_at_2_by_hand():
    # A: of the 6 pairs, {7,7} wins, {8,8} loses, the 4 mixed pairs tie (half): 3/6.
    # B: 3 pairs of 5s win, 3 pairs (5, 6) tie: 4.5/6.
    # C: {4,-} x2 win, {3,4} ties, {3,-} x2 lose, {-,-} nobody answers: 2.5/6.
    by_hand = [3 / 6, 4.5 / 6, 2.5 / 6]
    for a, s, expected in zip(ANSWERS, SCORES, by_hand):
        assert curve.majority_of_n(a, s, 2) == pytest.approx(expected)
    c = curve.curves(SCORES, ANSWERS)
    assert c["ns"] == [1, 2, 4] and c["n"] == 3 and c["samples"] == 4
    assert c["majority"]["accuracy"] == pytest.approx([
        (2 / 4 + 3 / 4 + 1 / 4) / 3,   # n=1: the mean score
        sum(by_hand) / 3,              # 5/9
        (0.5 + 1 + 0.5) / 3])          # n=4: A ties 2-2, B's 5 wins, C ties 3 vs 4
    # best-of-n by the grader: pass@2 = 1 - C(4-c, 2)/C(4, 2) with c = 2, 3, 1
    assert c["oracle"]["accuracy"][1] == pytest.approx((5 / 6 + 1 + 1 / 2) / 3)


def _ordered_draws(m, n):
    return itertools.permutations(range(m), n)


@pytest.mark.parametrize("seed", range(6))
def test_subset_estimators_equal_brute_force_over_ordered_draws(seed):
    """majority_of_n is stats.majority_at_k (first-seen breaks ties) averaged over every ordered
    draw of n samples; best_of_n the top reward's score averaged over every n-subset."""
    rng = np.random.default_rng(seed)
    m = 6
    answers = [None if x == 3 else str(x) for x in rng.integers(0, 4, m)]
    scores = [float(a == "1") for a in answers]
    rewards = rng.integers(0, 3, m).astype(float)  # ties in reward on purpose
    for n in range(1, m + 1):
        draws = list(_ordered_draws(m, n))
        majority = np.mean([stats.majority_at_k([answers[j] for j in d],
                                                [scores[j] for j in d], n) for d in draws])
        assert curve.majority_of_n(answers, scores, n) == pytest.approx(majority)
        best = []
        for subset in itertools.combinations(range(m), n):
            top = max(rewards[j] for j in subset)
            best.append(np.mean([scores[j] for j in subset if rewards[j] == top]))
        assert curve.best_of_n(scores, rewards, n) == pytest.approx(np.mean(best))
        c = int(sum(scores))
        assert curve.best_of_n(scores, scores, n) == pytest.approx(stats.pass_at_k(m, c, n))


def test_sampled_subsets_agree_with_the_exact_expectation():
    answers = ["a"] * 9 + ["b"] * 7 + ["c"] * 4 + [None] * 4
    scores = [1.0] * 9 + [0.0] * 15
    exact = curve.majority_of_n(answers, scores, 8)
    sampled = curve.majority_of_n(answers, scores, 8, max_exact=0, resamples=20000,
                                  rng=np.random.default_rng(1))
    assert math.comb(24, 8) > curve.MAX_EXACT  # the default would sample here too
    assert sampled == pytest.approx(exact, abs=0.01)


def test_the_oracle_curve_never_loses_accuracy_beyond_its_interval():
    rng = np.random.default_rng(0)
    P, M = 40, 16
    p_right = rng.uniform(0, 1, P)
    scores = (rng.random((P, M)) < p_right[:, None]).astype(float)
    reference = rng.integers(0, 10, P)
    wrong = rng.integers(10, 13, (P, M))  # a few wrong answers that can win a vote
    answers = [[str(reference[p]) if scores[p, j] else str(wrong[p, j]) for j in range(M)]
               for p in range(P)]
    c = curve.curves(scores.tolist(), answers)
    oracle = c["oracle"]
    assert curve.drops_beyond_interval(c["ns"], oracle) == []
    assert np.all(np.diff(oracle["accuracy"]) >= -1e-12)  # pass@n only grows with n
    assert oracle["accuracy"][0] == pytest.approx(scores.mean())  # pass@1: the mean score
    for method in ("oracle", "majority"):
        for acc, (lo, hi) in zip(c[method]["accuracy"], c[method]["ci95"]):
            assert lo <= acc <= hi
    # With 0/1 values per problem the bootstrap interval is close to Wilson's.
    first = scores[:, 0][:, None]
    lo, hi = curve.bootstrap_ci(first)[0]
    w_lo, w_hi = stats.wilson(first.sum(), P)
    assert abs(lo - w_lo) < 0.04 and abs(hi - w_hi) < 0.04


def test_drops_beyond_interval_names_the_n():
    method = {"accuracy": [0.5, 0.7, 0.3], "ci95": [[0.4, 0.6], [0.6, 0.8], [0.2, 0.4]]}
    assert curve.drops_beyond_interval([1, 2, 4], method) == [4]


class _RewardByLength:
    """A stand-in reward model: longer answers score higher (records what it was asked)."""

    def __init__(self):
        self.conversations = []

    def score(self, conversations):
        self.conversations += conversations
        return [len(c[-1]["content"]) for c in conversations]


TASK = tasks.get("arithmetic", digits=(2, 2), ops="+")


def test_reward_model_best_of_n_picks_the_highest_scored_sample():
    items = TASK.items(2, seed=0)
    r0, r1 = items[0].reference, items[1].reference
    script = {items[0].prompt[0]["content"]: [
                  (f"= {int(r0) + 1}", True), (f"It is = {r0}", True),   # the longest is right
                  (f"= {int(r0) + 2}", True), (f"= {int(r0) + 1}", True)],
              items[1].prompt[0]["content"]: [
                  (f"= {r1}", True), (f"Surely = {int(r1) + 5}", True),  # the longest is wrong
                  (f"= {r1}", True), (f"Surely it is {r1}", False)]}     # longer, cut off
    rm = _RewardByLength()
    report = cli_curve.measure(TASK, items, scripted(script), samples=4, batch_size=3,
                               rm=rm, progress=False)
    rm_curve = report["reward_model"]["per_problem"]
    assert rm_curve[0][-1] == 1.0 and rm_curve[1][-1] == 0.0  # n = 4: the top-reward sample
    # n = 1 is the mean score whatever the verifier; n = 2 on problem 0: the right sample is
    # in 3 of the 6 pairs and always the longer one.
    assert rm_curve[0][:2] == pytest.approx([0.25, 0.5])
    assert report["items"][1]["scores"] == [1, 0, 1, 0]  # cut off: 0, and no vote
    assert report["items"][1]["answers"][3] is None
    assert report["items"][0]["rewards"] == [len(t) for t in report["items"][0]["completions"]]
    assert rm.conversations[1] == items[0].prompt + [
        {"role": "assistant", "content": f"It is = {r0}"}]
    # majority at 4 on problem 1: r1 twice against one wrong answer
    assert report["majority"]["per_problem"][1][-1] == 1.0


def test_reward_model_scores_padded_batches_as_single_conversations():
    import jax
    import model
    from evals import reward_model
    from infer.chat.render import render

    m = tiny_twofiles_model()
    head = np.random.default_rng(0).standard_normal(m.config.d_model).astype(np.float32)
    rm = reward_model.RewardModel(params={**m.params, reward_model.HEAD: head},
                                  config=m.config, source=m, path="tiny")
    conversations = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}]
                     for q, a in [("hi", "hello"), ("what is 2 + 2?", "4"),
                                  ("a longer question here", "a longer answer, much longer")]]
    batched = rm.score(conversations, batch_size=2)
    for conv, r in zip(conversations, batched):
        ids, _ = render(m, conv)
        hidden, _ = model.forward(jax.tree.map(np.asarray, m.params),
                                  np.asarray([ids], np.int32), m.config, return_hidden=True)
        assert r == pytest.approx(float(np.asarray(hidden)[0, -1] @ head), rel=1e-4, abs=1e-4)


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    from infer.formats.export import export

    out = tmp_path_factory.mktemp("tiny") / "export"
    export(tiny_twofiles_model(), "twofiles", out)
    return str(out / "model.bin")


def test_the_command_writes_curves_table_and_plot(tiny_file, tmp_path, capsys):
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    flags = ["curve", "--model", tiny_file, "--task", "arithmetic", "--digits", "2,2",
             "--ops", "+", "--n", "3", "--max-samples", "4", "--max-new-tokens", "6",
             "--temperature", "1.0", "--json", str(out), "--plot", str(png)]
    assert evals_main.main(flags) == 0
    report = json.loads(out.read_text())
    assert report["ns"] == [1, 2, 4] and report["n"] == 3 and report["samples"] == 4
    assert set(report) >= {"majority", "oracle", "items", "model", "temperature"}
    assert "reward_model" not in report
    for item in report["items"]:
        assert len(item["completions"]) == len(item["scores"]) == len(item["answers"]) == 4
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "majority" in printed and "oracle" in printed
    with pytest.raises(SystemExit):  # refuses to overwrite, before any work
        evals_main.main(flags)
    assert "--force" in capsys.readouterr().err


@pytest.mark.parametrize("flags,match", [
    (["--temperature", "0"], "--temperature must be > 0"),
    (["--max-samples", "0"], "--max-samples must be at least 1"),
    (["--rm", "no-such-run"], "neither a training run directory"),
])
def test_bad_flags_get_one_line_before_the_model_loads(tmp_path, capsys, flags, match):
    out = tmp_path / "c.json"
    with pytest.raises(SystemExit):
        evals_main.main(["curve", "--model", str(tmp_path / "no-model"), "--task",
                         "arithmetic", *flags, "--json", str(out)])
    err = capsys.readouterr().err
    assert match in err and err.count("\n") == 1
    assert not out.exists()
