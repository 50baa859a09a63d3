# twofiles: `make demo` trains a small model and lets it write; `make test` runs the suite.
# Both create .venv and install the project on first use; later runs reuse it.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

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

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

test-fast: install
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow" tests

clean:
	rm -rf $(VENV) build *.egg-info
