"""Named training configs (JSON), loaded by train.config.load(NAME)."""
