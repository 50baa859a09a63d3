"""Scaling laws: plan a sweep, run it through `train`, fit L(N, D), spend a budget.

    from scaling import records, parametric, analysis
    runs = records.read_csv("runs.csv")             # params,tokens,loss[,flops]
    result = analysis.fit_all(runs, bootstrap_replicas=200)
    result.fit.law.optimal_n(1e21)

Modules: law (the formula and its closed forms), records (CSV/JSON), optim (vectorised L-BFGS),
parametric (approach 3), isoflop (approach 2), kaplan, bootstrap, analysis (all fits, JSON,
plan), plan (sweep shapes), sweep (runs through train.pretrain), plots.
Imports only `model` and `train` from the project (never `infer`).
"""
