"""Why RL's training reward stayed flat (issue #14): too few rollouts per step, not a bug.

    python -m experiments.rl_batch --base runs/pipe6/sft --out runs/rl_batch \
        p8  "optim.lr=1e-4 steps=60" \
        p32 "optim.lr=1e-4 steps=60 rl.prompts_per_step=32 rl.problems=4050"

Each named arm is `python -m train rl` on the pipeline's task (2-digit additions, no tool) with
the pipeline's RL settings plus the arm's overrides, then the greedy held-out gain over the base
on the 500 seed-0 problems with a paired-bootstrap 95% interval (evals.stats), appended to
OUT/results.jsonl. results.md holds the measured arms; `python -m experiments.rl_batch.sampled`
(sampled.py) measures an arm's gain in sampled pass@1, k samples per held-out problem.

What was checked before blaming the settings: the rows the trainer scores are the sampled ones
(decoded prompt | completion | reward | advantage), the sampler's log-probabilities are the
trainer's (tests/test_rl.py), 30 updates on one rollout batch raise the log-probability of its
positive-advantage completions and lower the negative ones, and on 64 training problems seen
again and again the training reward rises 0.52 -> 0.72. So the update learns; with 8 prompts x
8 samples a step the signal (one or two answer digits of the mixed groups) is small against
Adam, which moves every parameter by about lr whatever the gradient's signal-to-noise, so the
noise walks the model and held-out accuracy falls. Four to eight times the prompts per step at
the same lr turns the change positive.
"""
