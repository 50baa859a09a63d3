"""The pipeline's knobs: one frozen dataclass, a full and a fast (test-sized) preset."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Settings:
    # the task: a + b with two 2-digit numbers, answered in the head (no tool): SFT leaves room
    digits: tuple[int, int] = (2, 2)
    ops: str = "+"
    held_out: int = 500  # seed-0 problems every stage is scored on (200 gave +-4 pt intervals)
    # base: the demo plays mixed with arithmetic prose (experiments.tool_use.corpus; on the
    # plays alone the digits' embeddings collapse and SFT reached 6.5%); four layers (one cannot
    # copy multi-digit operands); the tool-use experiment's learning rate for this depth
    base_layers: int = 4
    base_steps: int = 1200
    base_lr: float = 3e-3
    base_arith_lines: int = 40_000  # asks 40,000 lines of + - * prose, 1 to 4 digits
    # sft
    sft_problems: int = 3500  # + held_out <= 4050, half of all 8100 problems
    sft_epochs: int = 8
    sft_lr: float = 3e-3
    # pairs: K samples of each problem from the SFT model, a right one over a wrong one
    pair_problems: int = 3000  # ~2,400 pairs: with 624 DPO reached 0.61 held-out, 0.72 with 2,394
    val_pair_problems: int = 200
    pair_samples: int = 8
    pair_temperature: float = 1.0
    pair_reference_chosen: bool = False  # all-wrong problems: the worked answer as chosen
    # dpo
    # beta 0.1 (3 epochs of 624 pairs) took task accuracy 0.742 -> 0.320: a small beta keeps
    # pushing the one differing digit long after the pair is won; plain DPO at beta 2, lr 2e-4
    # reached held-out preference accuracy 0.80 in 2 epochs of 2,394 pairs, 0.82 in 3.
    # RPO's NLL on the chosen answer (rpo_alpha 1) keeps raising the right answer once a pair
    # is won (DPO's loss alone then no longer cares which way both move), and it generalises:
    # on pipe6's SFT model and pairs, beta 2, lr 2e-4, 3 epochs gave 0.83 and task 0.742 ->
    # 0.776; beta 1, lr 4e-4, 3 epochs 0.88 and 0.780; beta 2, lr 2e-4, 5 epochs 0.90 (163
    # held-out pairs) and 0.806 [+3.2, +9.6 pt].
    dpo_beta: float = 2.0
    dpo_lr: float = 2e-4
    dpo_epochs: int = 5
    dpo_rpo_alpha: float = 1.0
    # rm
    # 3e-4 (2 epochs of 624 pairs) and 1e-3 (1 epoch of 2,394) both left train and held-out
    # pair accuracy at chance (0.53, 0.46). A zero head passes the body no gradient at first
    # (it flows through the head), so the head now starts random (std 0.05, TRL's head starts
    # N(0, 0.02^2)); still, lr 1e-3 for 2 and 4 epochs of 2,394 pairs stayed at chance (train
    # ~0.5, held-out 0.45-0.47), lr 2e-4 for 3 epochs began to fit its training pairs (0.65 in
    # the last epoch) with held-out 0.49, and 8 epochs of 300 pairs fitted them only to 0.75.
    # The driver learns an easy preference (tests/test_dpo.py); verifying one wrong digit from
    # the end-of-turn token is what this 1.1M model does not learn in minutes. 1 epoch: cheap.
    rm_lr: float = 1e-3
    rm_epochs: int = 1
    rm_head_init_std: float = 0.05
    # rl (chosen by session 7's experiments.rl_batch, on pipe6's SFT model, 500 held-out)
    # 8 prompts a step: 2e-4 lowered greedy pass@1 0.742 -> 0.688 by step 40, 3e-5 held it
    # (0.738) but gained nothing, 1e-4 for 60 steps -3.2 pt: with 64 rollouts a step whose
    # reward hangs on one or two digits, Adam moves every parameter ~lr on noise. 32 prompts
    # a step (4x the rollouts per update, the same 15,360 in all) at 1e-4 for 60 steps turned
    # it to +2.2 pt [-1.0, +5.4]; Dr. GRPO (no std scaling) +2.4 [-0.2, +5.0]; 2e-4 +1.8;
    # 64 prompts +2.4 [-0.6, +5.4]; 120 steps on 3000 problems +1.2. No arm's interval
    # excludes 0 at n=500 (half-width ~2.6 pt). KL to SFT at most 0.04 in every such arm.
    rl_steps: int = 60
    rl_lr: float = 1e-4
    rl_group: int = 8
    rl_prompts: int = 32
    rl_beta_kl: float = 0.05  # k3 penalty to SFT: keeps the KL bounded
    rl_problems: int = 4050  # all 2-digit additions left once the scored ones are dropped
    rl_scale_by_std: bool = False  # Dr. GRPO: advantages not divided by the group's std
    rl_temperature: float = 0.7  # rollouts' (was 1.0, the rl config's): same gain as 1.0
    # RL's gain is also scored as sampled pass@1 (DeepSeek-R1's: the mean of k samples per
    # held-out problem at the rollouts' temperature), far less noisy per problem than one
    # greedy answer (experiments.rl_batch.sampled: +4.6 pt [+3.4, +5.8] where greedy gave +2.4
    # [-0.2, +5.0], same runs)
    rl_eval_samples: int = 16
    # best-of-n by the reward model
    best_of: int = 16
    best_of_problems: int = 100


FULL = Settings()

# The whole pipeline in about two minutes: every stage runs and writes what the full one does
# (its model is never right, so its pairs take the worked answer as the chosen one).
FAST = dataclasses.replace(
    FULL, held_out=32, base_layers=2, base_steps=60, base_arith_lines=2000, sft_problems=300,
    sft_epochs=1,
    pair_problems=64, val_pair_problems=32, pair_samples=4, pair_reference_chosen=True,
    dpo_epochs=1, rm_epochs=1,
    rl_steps=4, rl_prompts=2, rl_group=4, rl_eval_samples=2, best_of=4, best_of_problems=16)
