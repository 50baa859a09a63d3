"""Arena ratings: Bradley–Terry by maximum likelihood with bootstrap intervals, and online Elo.

    battles = read_battles("battles.jsonl")     # FastChat's {"model_a", "model_b", "winner"}
    table = rate(battles, bootstrap=1000)       # Ratings, best first
    table.to_json()["ratings"][0]               # {"model", "rating", "ci95", "battles", ...}

Bradley–Terry: P(a beats b) = 1 / (1 + 10 ** ((R_b - R_a) / 400)), i.e. log-strengths on the Elo
scale (400 / ln 10 points per unit), fitted by maximum likelihood over all battles at once, so
unlike online Elo the result does not depend on the order of the battles. A tie (either kind)
counts as half a win to each side. Ratings are anchored so that their mean is 1000, or so that a
named anchor model is exactly 1000. The 95% intervals are percentiles of the ratings refitted on
battles resampled with replacement (LMSYS's Chatbot Arena method, Chiang et al. 2024).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import scipy.optimize
import scipy.special

WINNERS = ("model_a", "model_b", "tie", "tie (bothbad)")
SCALE = 400 / math.log(10)  # Elo points per unit of natural log-strength
BASE_RATING = 1000.0
ELO_K = 4.0  # LMSYS's online Elo step (their notebook's K=4)
# A weak Gaussian prior on log-strengths (standard deviation 1/sqrt(RIDGE) = 10 units, about
# 1700 Elo points). The pure maximum-likelihood rating of a model that won (or lost) every battle
# is infinite; this keeps it finite and ranked first (or last), and it fixes the free shift of
# the log-strengths. With tens of battles per model it moves ratings by well under a point.
RIDGE = 0.01


class BattleError(ValueError):
    """A battle record is malformed; the message names the file and line."""


@dataclasses.dataclass(frozen=True)
class Battle:
    model_a: str
    model_b: str
    winner: str  # one of WINNERS


def parse_battle(record, where: str) -> Battle:
    """A Battle from one FastChat record (extra keys are ignored); `where` prefixes errors."""
    if not isinstance(record, dict):
        raise BattleError(f"{where}: expected a JSON object, got {type(record).__name__}")
    for key in ("model_a", "model_b"):
        if not isinstance(record.get(key), str) or not record[key]:
            raise BattleError(f"{where}: {key!r} must be a non-empty string, "
                              f"got {record.get(key)!r}")
    if record["model_a"] == record["model_b"]:
        raise BattleError(f"{where}: a model cannot battle itself ({record['model_a']!r})")
    if record.get("winner") not in WINNERS:
        raise BattleError(f"{where}: 'winner' must be one of {', '.join(WINNERS)}; "
                          f"got {record.get('winner')!r}")
    return Battle(record["model_a"], record["model_b"], record["winner"])


def read_battles(path) -> list[Battle]:
    """Battles from a JSONL file, one FastChat record a line (blank lines skipped). A bad line
    is refused with FILE:LINE before anything is computed."""
    battles = []
    with open(path, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                record = json.loads(line)
            except UnicodeDecodeError:
                raise BattleError(f"{path}:{n}: not UTF-8 text; expected JSONL battles") from None
            except json.JSONDecodeError as e:
                raise BattleError(f"{path}:{n}: not JSON ({e.msg})") from None
            battles.append(parse_battle(record, f"{path}:{n}"))
    if not battles:
        raise BattleError(f"{path}: no battles; expected one JSON object a line with "
                          f"model_a, model_b and winner")
    return battles


def _score(winner: str) -> float:
    """model_a's share of the win: 1, 0, or 0.5 for either kind of tie."""
    return {"model_a": 1.0, "model_b": 0.0}.get(winner, 0.5)


def _encode(battles: Sequence[Battle], models: Sequence[str]):
    index = {m: i for i, m in enumerate(models)}
    a_N = np.array([index[b.model_a] for b in battles])
    b_N = np.array([index[b.model_b] for b in battles])
    s_N = np.array([_score(b.winner) for b in battles])
    return a_N, b_N, s_N


def _wins_matrix(a_N, b_N, s_N, weight_N, n_models: int) -> np.ndarray:
    """W[i, j]: total (weighted) wins of i over j, a tie adding half to each side."""
    wins_MM = np.zeros((n_models, n_models))
    np.add.at(wins_MM, (a_N, b_N), weight_N * s_N)
    np.add.at(wins_MM, (b_N, a_N), weight_N * (1 - s_N))
    return wins_MM


def _fit_log_strengths(wins_MM: np.ndarray) -> np.ndarray:
    """Maximises sum_ij W_ij log sigmoid(theta_i - theta_j) - RIDGE/2 |theta|^2 (concave)."""
    def loss_and_grad(theta_M):
        diff_MM = theta_M[:, None] - theta_M[None, :]
        # log sigmoid(d) = -log(1 + e^-d), and d/dd = sigmoid(-d): both stable for any d
        loss = np.sum(wins_MM * np.logaddexp(0.0, -diff_MM)) + 0.5 * RIDGE * theta_M @ theta_M
        g_MM = wins_MM * scipy.special.expit(-diff_MM)
        grad_M = -g_MM.sum(1) + g_MM.sum(0) + RIDGE * theta_M
        return loss, grad_M

    n = wins_MM.shape[0]
    result = scipy.optimize.minimize(loss_and_grad, np.zeros(n), jac=True, method="L-BFGS-B",
                                     options=dict(gtol=1e-9, maxiter=10_000))
    return result.x


def _to_elo(theta_M: np.ndarray, anchor_index: int | None) -> np.ndarray:
    ref = theta_M.mean() if anchor_index is None else theta_M[anchor_index]
    return BASE_RATING + SCALE * (theta_M - ref)


def online_elo(battles: Iterable[Battle], k: float = ELO_K) -> dict[str, float]:
    """Sequential Elo in battle order from 1000 (K=4, base 10, scale 400, as LMSYS reported).
    Order-dependent by nature; shown beside the Bradley–Terry fit for comparison."""
    rating: dict[str, float] = {}
    for b in battles:
        ra, rb = rating.get(b.model_a, BASE_RATING), rating.get(b.model_b, BASE_RATING)
        expected_a = 1 / (1 + 10 ** ((rb - ra) / 400))
        delta = k * (_score(b.winner) - expected_a)
        rating[b.model_a], rating[b.model_b] = ra + delta, rb - delta
    return rating


@dataclasses.dataclass
class Ratings:
    """Models best first, with their Bradley–Terry rating, 95% interval, battle count and
    online Elo; `win_rate[i][j]` is the share of i's battles against j that i won (ties half),
    NaN where the two never met."""

    models: list[str]
    rating: list[float]
    ci95: list[tuple[float, float]]
    battles: list[int]
    elo_online: list[float]
    win_rate: np.ndarray
    anchor: str | None
    bootstrap: int

    def to_json(self) -> dict:
        return {
            "ratings": [{"model": m, "rating": r, "ci95": list(ci), "battles": n,
                         "elo_online": e}
                        for m, r, ci, n, e in zip(self.models, self.rating, self.ci95,
                                                  self.battles, self.elo_online)],
            "anchor": (f"{self.anchor} = {BASE_RATING:g}" if self.anchor else
                       f"mean = {BASE_RATING:g}"),
            "scale": "Elo: 400 points = 10x the odds of winning",
            "bootstrap": self.bootstrap,
            "win_rate": {"models": self.models,
                         "matrix": [[None if math.isnan(x) else x for x in row]
                                    for row in self.win_rate.tolist()]},
        }


def rate(battles: Sequence[Battle], *, bootstrap: int = 1000, anchor: str | None = None,
         seed: int = 0) -> Ratings:
    """Bradley–Terry ratings of every model in `battles`, with `bootstrap` resamples for the
    95% intervals (0: no intervals, each ci95 is the rating itself)."""
    if not battles:
        raise ValueError("rate: no battles")
    if bootstrap < 0:
        raise ValueError(f"rate: bootstrap must be >= 0, got {bootstrap}")
    models = sorted({b.model_a for b in battles} | {b.model_b for b in battles})
    if anchor is not None and anchor not in models:
        raise ValueError(f"rate: anchor {anchor!r} has no battles; models: {', '.join(models)}")
    anchor_index = None if anchor is None else models.index(anchor)
    a_N, b_N, s_N = _encode(battles, models)
    n_battles, n_models = len(battles), len(models)

    ones_N = np.ones(n_battles)
    wins_MM = _wins_matrix(a_N, b_N, s_N, ones_N, n_models)
    elo_M = _to_elo(_fit_log_strengths(wins_MM), anchor_index)

    rng = np.random.default_rng(seed)
    samples_SM = np.array([
        _to_elo(_fit_log_strengths(_wins_matrix(
            a_N, b_N, s_N, rng.multinomial(n_battles, ones_N / n_battles), n_models)),
            anchor_index)
        for _ in range(bootstrap)]).reshape(bootstrap, n_models)
    lo_M, hi_M = ((np.percentile(samples_SM, 2.5, axis=0), np.percentile(samples_SM, 97.5, axis=0))
                  if bootstrap else (elo_M, elo_M))

    games_MM = wins_MM + wins_MM.T
    with np.errstate(invalid="ignore"):
        win_rate_MM = np.where(games_MM > 0, wins_MM / np.where(games_MM > 0, games_MM, 1), np.nan)
    np.fill_diagonal(win_rate_MM, np.nan)
    counts_M = np.bincount(a_N, minlength=n_models) + np.bincount(b_N, minlength=n_models)
    online = online_elo(battles)

    order = np.argsort(-elo_M, kind="stable")
    return Ratings(
        models=[models[i] for i in order],
        rating=[float(elo_M[i]) for i in order],
        ci95=[(float(lo_M[i]), float(hi_M[i])) for i in order],
        battles=[int(counts_M[i]) for i in order],
        elo_online=[float(online[models[i]]) for i in order],
        win_rate=win_rate_MM[np.ix_(order, order)],
        anchor=anchor, bootstrap=bootstrap)
