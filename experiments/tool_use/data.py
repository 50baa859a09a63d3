"""The two arms' training sets: arithmetic through the calculator, and the same in the head.

    arms = build_arms(tokenizer, n_tool=12_000, digits=(4, 3), ops="*")
    arms.tool, arms.head          # 12,000 and 30,629 conversations (OpenAI-shaped messages)
    arms.tokens                   # {"tool": 1_219_782, "head": 1_219_793}: rendered tokens of each

"Same tokens": a tool conversation is about 2.5 times longer than its in-the-head twin (the call's
JSON and the tool message), so giving both arms the same *problems* would give the tool arm more
to read. Instead the tool arm gets `n_tool` problems and the head arm takes problems from the
same training stream until its rendered tokens reach the tool arm's, so the two sets differ by
less than one conversation. Both arms then train with the same steps, batch and row length, so
they also see exactly the same number of token positions (and take the same time).

Problems come from `evals.tasks.arithmetic.split`: none of them is a held-out problem the task
evaluates on.
"""

from __future__ import annotations

import dataclasses

from evals.tasks import arithmetic
from infer.chat.render import render


@dataclasses.dataclass(frozen=True)
class Arms:
    tool: list[list[dict]]
    head: list[list[dict]]
    tokens: dict[str, int]          # rendered tokens of each arm's conversations
    learnt: dict[str, int]          # of which assistant tokens (the loss mask)


def rendered_length(tokenizer, messages: list[dict]) -> tuple[int, int]:
    """(tokens, assistant tokens) of one conversation as SFT renders it."""
    ids, mask = render(tokenizer, messages)
    return len(ids), sum(mask[1:])


def build_arms(tokenizer, n_tool: int, *, seed: int = 0, digits: tuple[int, int] = (4, 3),
               ops: str = "*", n_held_out: int = 1000) -> Arms:
    """The tool arm's `n_tool` conversations and a head arm of the same token count (to within
    one conversation). `n_held_out` problems of the task's held-out stream are kept out."""
    if n_tool < 1:
        raise ValueError(f"build_arms: n_tool must be at least 1, got {n_tool}")
    # The head arm needs about 2.6 times as many problems; 4x leaves room.
    pool, _ = arithmetic.split(4 * n_tool, n_held_out, seed=seed, digits=digits, ops=ops)
    tool, tool_tokens, tool_learnt = [], 0, 0
    for p in pool[:n_tool]:
        messages = arithmetic.conversation(p, tool=True)
        n, learnt = rendered_length(tokenizer, messages)
        tool.append(messages)
        tool_tokens, tool_learnt = tool_tokens + n, tool_learnt + learnt
    head, head_tokens, head_learnt = [], 0, 0
    for p in pool:
        messages = arithmetic.conversation(p, tool=False)
        n, learnt = rendered_length(tokenizer, messages)
        # Stop on whichever side of the budget is closer: |difference| <= half a conversation.
        if head_tokens + n - tool_tokens > tool_tokens - head_tokens:
            break
        head.append(messages)
        head_tokens, head_learnt = head_tokens + n, head_learnt + learnt
    else:
        raise ValueError(f"build_arms: {len(pool)} problems are too few for the head arm")
    return Arms(tool=tool, head=head, tokens={"tool": tool_tokens, "head": head_tokens},
                learnt={"tool": tool_learnt, "head": head_learnt})
