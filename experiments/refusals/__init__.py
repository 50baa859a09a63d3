"""Refusals as a fine-tuning target: LoRA-SFT of SmolLM2 on the refusal set, measured before and
after (refusal rate on held-out harmful requests, over-refusal on benign ones, Wilson intervals).

    python -m experiments.refusals --out experiments/refusals/results

- `scorer`: is a reply a refusal (the refusal phrases of AdvBench's evaluation, at its start).
- `__main__`: the data, the base's replies, LoRA SFT (train.sft), the fine-tuned replies.
"""
