"""A model that does arithmetic in its head makes mistakes, so it calls a calculator (issue 13.6).

One base model is fine-tuned twice on 4-digit x 3-digit multiplication: once writing a calculator
call and reading the answer back (the twofiles chat tokens' tool-call format), once answering in
its head, with the same tokens, steps and rows. Both are evaluated on the arithmetic task's
held-out problems with the calculator on and off, each accuracy with its Wilson interval and
the gap with the interval of the difference. `python -m experiments.tool_use` runs it; the
committed numbers, plot and commands are in results/.
"""
