"""twofiles evaluation: tasks with graders, the harness, arena ratings and attack harnesses.

Sits between `infer` (which it drives) and `train` (which uses its tasks for SFT data, its
graders as RL rewards and its harness as the eval hook); see DESIGN.md's layering table.
"""
