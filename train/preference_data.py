"""Preference pairs as the loop sees them: rendered by the model's chat template, padded side by
side into pair batches (train.preference_losses documents the layout), epoch after epoch.

Each answer is rendered as prompt + answer by the one renderer (infer.chat.render); only the
final assistant message is learnt or scored: the mask is cut to the tokens after the prompt's
own render with the generation prompt, so earlier assistant turns of the prompt count for
nothing. Pairs are never packed: the two answers of a pair sit in one batch entry, so any
split of the batch (devices, microbatches) keeps them together.

`load_pairs` and `tokenizer_meta` are what the DPO and reward-model drivers share: the rendered
files with the row length and steps resolved, and the tokenizer a run saves.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from infer.chat.template import is_twofiles_tokenizer
from infer.formats import tokenizer_file
from model.config import ConfigError
from train.config import TrainConfig
from train.datasets import preferences
from train.sft import TRAINING_MODEL_FIELDS
from train.step import OnMesh

MAX_AUTO_SEQ_LEN = 1024  # the longest rows data.seq_len 0 chooses


def render_answer(source, prompt: list[dict], answer: dict) -> tuple[list[int], list[int]]:
    """(ids, mask) of prompt + answer, the mask 1 only on the answer's own tokens (its content,
    tool calls and end-of-turn token)."""
    from infer.chat.render import prompt_ids, render

    ids, mask = render(source, prompt + [answer])
    head = prompt_ids(source, prompt)
    start = len(head)
    if ids[:start] != head or sum(mask[start:]) == 0:
        raise ConfigError("the chat template does not render the answer after the prompt's own "
                          "tokens; the answer's tokens cannot be told apart to score them")
    return ids, [0] * start + mask[start:]


def render_file(source, path, row_len: int) -> tuple[list, dict]:
    """Rendered pairs (chosen ids, chosen mask, rejected ids, rejected mask) of a preference
    file, and counts; a pair with an answer longer than a row is refused with FILE:LINE."""
    from infer.chat.messages import ChatError

    examples = []
    for where, pair in preferences.iter_file(path):
        rendered = []
        for name, answer in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            try:
                ids, mask = render_answer(source, pair.prompt, answer)
            except (ChatError, ConfigError) as e:
                raise ConfigError(f"{where}: {name}: {e}") from None
            if len(ids) > row_len:
                raise ConfigError(f"{where}: prompt + {name} is {len(ids)} tokens, longer than "
                                  f"a row of {row_len}; raise data.seq_len or shorten it")
            rendered += [ids, mask]
        examples.append(tuple(rendered))
    if not examples:
        raise ConfigError(f"{path}: holds no preference pairs")
    tokens = sum(len(e[0]) + len(e[2]) for e in examples)
    scored = sum(sum(e[1]) + sum(e[3]) for e in examples)
    return examples, {"pairs": len(examples), "tokens": tokens, "answer_tokens": scored}


def _padded(examples, row_len: int) -> dict[str, np.ndarray]:
    """tokens and mask [N, 2, row_len], lengths [N, 2]."""
    n = len(examples)
    tokens = np.zeros((n, 2, row_len), np.int32)
    mask = np.zeros((n, 2, row_len), np.int32)
    lengths = np.zeros((n, 2), np.int32)
    for i, (ids_c, mask_c, ids_r, mask_r) in enumerate(examples):
        for a, (ids, m) in enumerate(((ids_c, mask_c), (ids_r, mask_r))):
            tokens[i, a, :len(ids)], mask[i, a, :len(ids)], lengths[i, a] = ids, m, len(ids)
    return {"tokens": tokens, "mask": mask, "lengths": lengths}


class PairBatches:
    """Endless batches of `batch_size` pairs: each epoch shuffles the pairs by (seed, epoch);
    the last batch of an epoch is filled with invalid pairs (valid 0). Its state (epoch, batch)
    is saved in every checkpoint, so a resumed run sees exactly the batches it would have.

    next_token (DPO): inputs, targets and loss_mask [B, 2, row_len - 1]; otherwise (the reward
    model): inputs [B, 2, row_len] and last [B, 2], the index of each conversation's last token.
    `ref_logps` [N, 2], given per pair, travels with it (DPO's precomputed reference).
    """

    def __init__(self, examples, batch_size: int, row_len: int, seed: int, *,
                 next_token: bool, shuffle: bool = True, ref_logps=None):
        if not examples:
            raise ConfigError("no preference pairs to train on")
        self.data = _padded(examples, row_len)
        if ref_logps is not None:
            self.data["ref_logps"] = np.asarray(ref_logps, np.float32)
        self.n, self.batch_size, self.seed = len(examples), batch_size, seed
        self.next_token, self.shuffle = next_token, shuffle
        self.epoch, self.batch = 0, 0

    def batches_per_epoch(self) -> int:
        return -(-self.n // self.batch_size)

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        lo = self.batch * self.batch_size
        take = self._order(self.epoch)[lo:lo + self.batch_size]
        valid = np.zeros(self.batch_size, np.float32)
        valid[:len(take)] = 1
        take = np.concatenate([take, np.zeros(self.batch_size - len(take), take.dtype)])
        rows = {k: v[take] for k, v in self.data.items()}
        self.batch += 1
        if self.batch * self.batch_size >= self.n:
            self.epoch, self.batch = self.epoch + 1, 0
        return self._batch(rows, valid)

    def _batch(self, rows: dict, valid: np.ndarray) -> dict[str, np.ndarray]:
        # A filler entry repeats a real pair (valid 0): its loss is computed and weighted 0.
        out = {"valid": valid}
        if "ref_logps" in rows:
            out["ref_logps"] = rows["ref_logps"]
        if self.next_token:
            out.update(inputs=rows["tokens"][..., :-1], targets=rows["tokens"][..., 1:],
                       loss_mask=rows["mask"][..., 1:])
        else:
            out.update(inputs=rows["tokens"], last=rows["lengths"] - 1)
        return out

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch}

    def set_state(self, state: dict) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


def one_epoch(examples, cfg, mesh, *, next_token: bool, ref_logps=None) -> list:
    """Every pair once, in file order, as batches on the mesh (for evaluation and for
    computing the reference)."""
    rows = PairBatches(examples, cfg.data.batch_size, cfg.seq_len + 1 if next_token
                       else cfg.seq_len, cfg.seed, next_token=next_token, shuffle=False,
                       ref_logps=ref_logps)
    on_mesh = OnMesh(rows, mesh)
    return [next(on_mesh) for _ in range(rows.batches_per_epoch())]


def evaluate(eval_step, params, frozen, batches: list, prefix: str = "val_") -> dict:
    """The loss and every metric averaged over the valid pairs of `batches`."""
    sums: dict[str, float] = {}
    count = 0.0
    for batch in batches:
        loss_sum, n, metrics = eval_step(params, batch, frozen)
        for k, v in {"loss": loss_sum, **metrics}.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        count += float(n)
    out = {prefix + k: v / max(count, 1.0) for k, v in sums.items()}
    out[prefix + "pairs"] = int(count)
    return out


def resolve(cfg: TrainConfig, base_config, seq_len: int, n_pairs: int, epochs: int
            ) -> TrainConfig:
    """The run's config: the base's model shape (with the training fields the user set), the
    row length, and steps from the epochs when steps is 0."""
    mcfg = dataclasses.replace(base_config,
                               **{f: getattr(cfg.model, f) for f in TRAINING_MODEL_FIELDS})
    cfg = dataclasses.replace(cfg, model=mcfg,
                              data=dataclasses.replace(cfg.data, seq_len=seq_len))
    if cfg.steps == 0:
        batches = -(-n_pairs // cfg.data.batch_size)
        cfg = dataclasses.replace(cfg, steps=max(1, epochs * batches))
    return cfg


def tokenizer_meta(base, stage: str, source: str) -> tuple[dict | None, dict]:
    """(tokenizer document to save, meta) of a run fine-tuned from `base`: a twofiles tokenizer
    is saved in the run; another one is read from the base when the run is loaded."""
    meta = {"stage": stage, "base": source}
    if not is_twofiles_tokenizer(base.tokenizer):
        return None, meta
    doc = tokenizer_file.to_doc(base.tokenizer)
    return doc, {**meta, "tokenizer_fingerprint": doc["fingerprint"]}


def load_pairs(cfg: TrainConfig, section, base, *, next_token: bool) -> tuple:
    """(config with the row length and steps resolved, train pairs, val pairs, counts). A row
    holds seq_len + 1 tokens for next-token targets (DPO), seq_len for a reward model."""
    extra = int(next_token)
    cap = cfg.data.seq_len or min(base.config.max_seq_len, MAX_AUTO_SEQ_LEN)
    examples, counts = render_file(base, section.pairs, cap + extra)
    val, val_counts = (render_file(base, section.val, cap + extra) if section.val
                       else ([], {}))
    # data.seq_len 0: rows as long as the longest answer (in steps of 64), not the context.
    longest = max(max(len(e[0]), len(e[2])) for e in examples + val)
    seq_len = cfg.data.seq_len or min(cap, -(-(longest - extra) // 64) * 64)
    cfg = resolve(cfg, base.config, seq_len, len(examples), section.epochs)
    return cfg, examples, val, {"train": counts, "val": val_counts}
