"""System 2, measured: accuracy against samples per problem, by majority vote and by best-of-n.

    c = curve.curves(scores_PM, answers_PM, rewards_PM=None)   # ns 1, 2, 4, ... up to M
    c["oracle"]["accuracy"]      # best-of-n with the task's grader as the verifier (= pass@n)
    c["majority"]["ci95"]        # [[lo, hi], ...]: 95% bootstrap intervals over problems

Every problem has M completions drawn once (`scores_PM[p][j]` in [0, 1], `answers_PM[p][j]`
the final answer the grader reads, None when it gave none). The accuracy at n < M is the
expectation over a uniformly random size-n subset of those M, the way pass@k's unbiased
estimator treats its samples, rather than the first n: it uses every sample at every n, so
points are less noisy and the curve cannot depend on the order of the draws.

- best-of-n (a verifier ranks the n samples, the top one is graded) is exact: the top of a
  random n-subset lies in the group of samples with one reward value with probability
  (C(below + size, n) - C(below, n)) / C(M, n), and within that group it is any member
  equally. With the grader as the verifier and 0/1 scores this is pass@n (Chen et al. 2021).
- majority@n (self-consistency, Wang et al. 2022): the most common answer among the n wins
  (ties split evenly, which is what "first seen wins" gives over a random order) and scores its
  group's mean score. Exact over every subset when there are at most `max_exact` of them,
  otherwise the mean over `resamples` random subsets from a fixed seed.
- Intervals: the percentile bootstrap over problems (samples of one problem are not
  independent trials), one set of resampled problems shared by every point of every curve.
"""

from __future__ import annotations

import itertools
import math
from typing import Hashable, Sequence

import numpy as np

from evals import stats

MAX_EXACT = 5000  # subsets enumerated exactly for majority@n; more are sampled
RESAMPLES = 4000  # random subsets per problem when sampled
BOOTSTRAP = 2000  # resampled problem sets for the intervals


def best_of_n(scores: Sequence[float], rewards: Sequence[float], n: int) -> float:
    """Expected score of the highest-reward sample of a uniformly random n-subset of the
    samples (ties in reward split evenly among the tied samples)."""
    m = _check(scores, rewards, n, "rewards")
    rewards_M, scores_M = np.asarray(rewards, float), np.asarray(scores, float)
    total, below = 0.0, 0
    for value in np.unique(rewards_M):  # ascending
        group = rewards_M == value
        size = int(group.sum())
        p_top_here = (math.comb(below + size, n) - math.comb(below, n)) / math.comb(m, n)
        total += p_top_here * float(scores_M[group].mean())
        below += size
    return total


def _subsets(m: int, n: int, rng: np.random.Generator, max_exact: int,
             resamples: int) -> np.ndarray:
    """Membership masks [S, m] of every n-subset (when at most max_exact) or of `resamples`
    uniformly random ones."""
    if math.comb(m, n) <= max_exact:
        mask = np.zeros((math.comb(m, n), m), bool)
        for s, chosen in enumerate(itertools.combinations(range(m), n)):
            mask[s, list(chosen)] = True
        return mask
    ranks = np.argsort(rng.random((resamples, m)), axis=1)
    return ranks < n


def majority_of_n(answers: Sequence[Hashable | None], scores: Sequence[float], n: int, *,
                  rng: np.random.Generator | None = None, max_exact: int = MAX_EXACT,
                  resamples: int = RESAMPLES) -> float:
    """Expected majority-vote score over n-subsets of the samples. Samples without an answer
    (None) do not vote; a subset where none answered scores 0."""
    m = _check(scores, answers, n, "answers")
    classes = sorted({a for a in answers if a is not None}, key=repr)
    if not classes:
        return 0.0
    index = {a: i for i, a in enumerate(classes)}
    onehot_MC = np.zeros((m, len(classes)))
    for j, a in enumerate(answers):
        if a is not None:
            onehot_MC[j, index[a]] = 1.0
    # Samples with one answer share its score under any one-answer grader; the mean keeps
    # the expectation exact when they do not (first-seen among them is uniform).
    class_score_C = (onehot_MC * np.asarray(scores, float)[:, None]).sum(0) / onehot_MC.sum(0)
    rng = rng if rng is not None else np.random.default_rng(0)
    votes_SC = _subsets(m, n, rng, max_exact, resamples).astype(float) @ onehot_MC
    top_S = votes_SC.max(1, keepdims=True)
    winners_SC = (votes_SC == top_S) & (top_S > 0)
    won_S = winners_SC.sum(1)
    score_S = np.where(won_S > 0, (winners_SC * class_score_C).sum(1) / np.maximum(won_S, 1), 0)
    return float(score_S.mean())


def _check(scores, other, n: int, other_name: str) -> int:
    m = len(scores)
    if len(other) != m or not 1 <= n <= m:
        raise ValueError(f"need as many {other_name} as scores and 1 <= n <= {m} samples, got "
                         f"{len(other)} {other_name}, {m} scores, n={n}")
    return m


def bootstrap_ci(values_PN: np.ndarray, *, resamples: int = BOOTSTRAP, seed: int = 0,
                 level: float = 0.95) -> np.ndarray:
    """Percentile intervals [N, 2] of the mean over problems of each column of `values_PN`,
    every column resampled with the same problem sets (so curves stay comparable)."""
    values_PN = np.asarray(values_PN, float)
    P = values_PN.shape[0]
    idx_BP = np.random.default_rng(seed).integers(0, P, (resamples, P))
    means_BN = values_PN[idx_BP].mean(1)
    tail = (1 - level) / 2 * 100
    return np.percentile(means_BN, [tail, 100 - tail], axis=0).T


def curves(scores_PM, answers_PM, rewards_PM=None, *, ns: Sequence[int] | None = None,
           seed: int = 0, bootstrap: int = BOOTSTRAP) -> dict:
    """The curves for P problems of M samples each: {"ns": [samples per problem], "n": P,
    "samples": M, "majority": {...}, "oracle": {...}, with rewards "reward_model": {...}}, each {"accuracy": [...], "ci95": [[lo,
    hi], ...], "per_problem": [[one value per n] per problem]}."""
    P = len(scores_PM)
    if P == 0:
        raise ValueError("curves need at least one problem")
    M = len(scores_PM[0])
    if any(len(s) != M for s in scores_PM) or len(answers_PM) != P or (
            rewards_PM is not None and len(rewards_PM) != P):
        raise ValueError(f"every problem needs the same number of samples ({M}) and one list "
                         "of answers (and of rewards) per problem")
    ns = list(ns) if ns is not None else stats.ks_up_to(M)
    rng = np.random.default_rng(seed)
    per = {"majority": [[majority_of_n(a, s, n, rng=rng) for n in ns]
                        for a, s in zip(answers_PM, scores_PM)],
           "oracle": [[best_of_n(s, s, n) for n in ns] for s in scores_PM]}
    if rewards_PM is not None:
        per["reward_model"] = [[best_of_n(s, r, n) for n in ns]
                               for s, r in zip(scores_PM, rewards_PM)]
    out: dict = {"ns": ns, "n": P, "samples": M}
    for name, values in per.items():
        values_PN = np.asarray(values, float)
        ci_N2 = bootstrap_ci(values_PN, resamples=bootstrap, seed=seed)
        out[name] = {"accuracy": values_PN.mean(0).tolist(), "ci95": ci_N2.tolist(),
                     "per_problem": values_PN.tolist()}
    return out


def drops_beyond_interval(ns: Sequence[int], method: dict) -> list[int]:
    """The n at which `method`'s accuracy (one curve of `curves`) fell below the lower end of
    the previous point's interval: more samples should never lose accuracy beyond it."""
    acc, ci = method["accuracy"], method["ci95"]
    return [ns[i] for i in range(1, len(acc)) if acc[i] < ci[i - 1][0]]
