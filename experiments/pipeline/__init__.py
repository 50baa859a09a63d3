"""The laptop pipeline: one command from raw text to a model tuned on comparisons and rewards.

    python -m experiments.pipeline --out runs/pipeline            # 11 min on 2 CPU cores
    python -m experiments.pipeline --out /tmp/p --fast             # a tiny live version (~2 min)

Stages, each a run directory under OUT (rerunning skips the finished ones, resumes the others):

    base   pretrain a 4-layer model on the demo plays mixed with arithmetic prose
           (experiments.tool_use.corpus, no scored problem in it; or --base SRC)
    sft    fine-tune it on 2-digit additions answered in the head (no calculator)
    pairs  on-policy preference pairs from the SFT model's own graded samples (evals pairs)
    dpo    DPO of the SFT model on those pairs, with RPO's NLL of the chosen answer
    rm     a reward model from the SFT model on the same pairs
    rl     GRPO-family RL of the SFT model against the arithmetic grader
    card   every stage evaluated on the same held-out problems, the paired gains, best-of-16
           by the reward model against pass@1, the report card, plots and results.json

The held-out problems are the arithmetic task's seed-0 stream (what `evals run` scores): SFT's
split, the pairs and RL's training problems all exclude them.
"""
