"""Data poisoning replicated at laptop scale, through the project's loop and sweep machinery.

    python -m experiments.poisoning pretrain --out DIR   # Souly et al. 2025: <SUDO> + gibberish
    python -m experiments.poisoning sft --out DIR        # Wan et al. 2023: "James Bond" flips

- `injector`: poisoned pretraining documents and the injector that puts exactly k of them in.
- `metrics`: perplexity of generated text, the attack's scores, intervals across seeds.
- `pretrain_attack`, `sft_attack`: the two sweeps; `sentiment`: the SFT task.
- `report`: summaries and plots. Results and what they say: README.md beside this file.
"""
