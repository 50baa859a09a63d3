"""The final-number grader shared by the tasks whose answer is a number (arithmetic, gsm).

    final_number("4817 * 293 = 1411381.")        # "1411381"
    final_number("It is 1411381 or 1411382")     # None: two rival answers
    grade_number("The answer is 1,234.", "1234") # 1.0

The rule, chosen to be hard to game rather than generous:
- Only the text the model says counts: tool calls and tool outputs are cut out (an unterminated
  call runs to the end), so an answer that appears only inside a call or a result scores 0.
- The answer is on the last line that has a digit. If that line has a marker ("=", "is",
  "equals", "answer:", "####", or a closed "\\boxed{...}"), only what follows the last marker
  counts ("the sum of 2 and 9 is 11").
- That part must hold exactly one number, so hedging ("1234 or 1235"), echoing the prompt
  ("4817 * 293") or listing candidates scores 0; numbers are whole tokens, so 12345 never
  contains 1234; an unclosed "\\boxed{" gives no answer.
"""

from __future__ import annotations

import decimal
import re

# Spans the model does not "say": tool calls (twofiles tokens, or the <tool_call> JSON of
# imported templates) and tool outputs. A span without its end runs to the end of the text.
_HIDDEN = re.compile(
    r"<\|tool_call_start\|>.*?(?:<\|tool_call_end\|>|$)"
    r"|<\|tool_output_start\|>.*?(?:<\|tool_output_end\|>|$)"
    r"|<tool_call>.*?(?:</tool_call>|$)"
    r"|<tool_response>.*?(?:</tool_response>|$)", re.DOTALL)
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")
_MARKER = re.compile(r"=|\bis\b|\bequals\b|answer:|####|\\boxed\{", re.IGNORECASE)
# A whole number token: digits with optional thousands commas and decimals, never part of a
# longer run of digits (maximal munch over [\d,.]).
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_GROUPED = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?|-?\d+(?:\.\d+)?")


def visible_text(completion: str) -> str:
    """The completion without tool calls, tool outputs and chat control tokens."""
    return _SPECIAL.sub("\n", _HIDDEN.sub("\n", completion))


def _answer_part(line: str) -> str | None:
    markers = list(_MARKER.finditer(line))
    if not markers:
        return line
    last = markers[-1]
    rest = line[last.end():]
    if last.group().lower() == "\\boxed{":
        return rest.split("}", 1)[0] if "}" in rest else None
    return rest


def final_number(completion: str) -> str | None:
    """The completion's final numeric answer, normalised (no commas, no trailing zeros), or None
    when it gives no single final number."""
    lines = [ln for ln in visible_text(completion).splitlines() if re.search(r"\d", ln)]
    if not lines:
        return None
    part = _answer_part(lines[-1])
    if part is None:
        return None
    tokens = [t.rstrip(",") for t in _NUMBER.findall(part)]
    if len(tokens) != 1 or not _GROUPED.fullmatch(tokens[0]):
        return None
    return normalise(tokens[0])


def normalise(number: str) -> str:
    """A number's canonical text: "1,234.50" -> "1234.5", "7.0" -> "7", "-0" -> "0"."""
    value = decimal.Decimal(number.replace(",", ""))
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def grade_number(completion: str, reference: str) -> float:
    """1.0 when the completion's single final number equals `reference`, else 0.0."""
    answer = final_number(completion)
    return float(answer is not None and answer == normalise(reference))
