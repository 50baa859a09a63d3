"""The sampling settings a conversation starts with, when the user gives none.

In order: the model's own recommendation where its files carry one (a GGUF's
`general.sampling.*` keys, a Hugging Face directory's generation_config.json), then the
FALLBACK table of model cards' recommendations by family (only for files that carry none),
then GENERIC. Flags the user gives always win; the command line applies them on top.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Recommended:
    """Temperature, top-k (0 = off) and top-p (1 = off), and where they come from."""

    temperature: float
    top_k: int
    top_p: float
    source: str

    def settings(self) -> dict:
        return dict(temperature=self.temperature, top_k=self.top_k, top_p=self.top_p)


# A nucleus of 0.9 keeps a small model's long tail of unlikely tokens out of its answers.
GENERIC = Recommended(0.7, 0, 0.9, "the default for models that recommend no settings")

# FALLBACK ONLY, for files that carry no recommendation: model cards' settings, matched against
# a GGUF's general.basename / general.name or a Hugging Face directory's name.
FALLBACK = {
    "smollm2": Recommended(0.2, 0, 0.9, "SmolLM2's model card; the file recommends none"),
}

_GGUF_KEYS = {"temperature": "general.sampling.temp", "top_k": "general.sampling.top_k",
              "top_p": "general.sampling.top_p"}
# transformers' GenerationConfig defaults when do_sample is true and a field is absent.
_HF_DEFAULTS = {"temperature": 1.0, "top_k": 50, "top_p": 1.0}


def for_model(m) -> Recommended:
    """The recommended settings of an infer.Model (see the module docstring)."""
    meta = m.metadata or {}
    found = _from_gguf(meta) or _from_generation_config(meta.get("generation_config"))
    if found is not None:
        return found
    names = " ".join(str(meta.get(k, "")) for k in ("general.basename", "general.name"))
    names = f"{names} {meta.get('directory_name', '')}".lower()
    for family, recommended in FALLBACK.items():
        if family in names:
            return recommended
    return GENERIC


def _from_gguf(meta: dict) -> Recommended | None:
    given = {ours: meta[key] for ours, key in _GGUF_KEYS.items() if key in meta}
    if not given:
        return None
    return _checked({**GENERIC.settings(), "top_k": 0, "top_p": 1.0, **given},
                    "the GGUF file's general.sampling.* keys")


def _from_generation_config(gen: dict | None) -> Recommended | None:
    if not gen or not any(k in gen for k in ("do_sample", *_HF_DEFAULTS)):
        return None  # e.g. only token ids: no recommendation
    if gen.get("do_sample") is False:
        return Recommended(0.0, 0, 1.0, "generation_config.json (do_sample: false, greedy)")
    settings = {k: gen.get(k, default) for k, default in _HF_DEFAULTS.items()}
    return _checked(settings, "generation_config.json")


def _checked(settings: dict, source: str) -> Recommended | None:
    """The settings if they are valid sampler settings; a file's bad values are ignored (and
    the next source used) rather than failing a chat the user did not configure."""
    from infer.runtime.sampling import SamplingParams

    try:
        top_k = settings["top_k"]
        if isinstance(top_k, float) and top_k.is_integer():
            top_k = int(top_k)
        p = SamplingParams(float(settings["temperature"]), top_k, float(settings["top_p"]))
    except (TypeError, ValueError):
        return None
    return Recommended(p.temperature, p.top_k, p.top_p, source)
