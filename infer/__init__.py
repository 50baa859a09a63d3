"""twofiles inference: load models (GGUF, Hugging Face, twofiles), generate, chat, export.

Kept tiny and lazy: `import infer` loads nothing heavy until an attribute is used.
`infer.load(source) -> infer.Model` lives in infer/load_model.py (a submodule named `load`
would shadow the function).
"""


def __getattr__(name):
    if name in ("load", "Model", "LoadError"):
        from infer import load_model

        return getattr(load_model, name)
    raise AttributeError(f"module 'infer' has no attribute {name!r}")
