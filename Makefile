# All set-up happens here: a fresh machine needs only `make pretrain` or `make test`.
PY ?= python3
PHANTOM_N ?= 600
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test qa bench pretrain downstream phantom clean chromium

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	# One pip command: torch from the local CPU wheel plus every pinned dependency, resolved together.
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0 -e '.[dev]'
	# Bytecode for our own (editable) packages: pip compiles site-packages only, and environments with
	# PYTHONDONTWRITEBYTECODE=1 would otherwise recompile them on every qa-build start (~0.15 s).
	$(BIN)/python -m compileall -q qa_builder model pipelines > /dev/null
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the qa-inspect HTML screenshot test (Debian package; best effort: the test
# skips if it cannot be installed, everything else still runs).
chromium:
	@bash .ci/install_chromium.sh || echo "chromium not installed; the screenshot test will skip"

test: $(STAMP) chromium
	$(BIN)/python -m pytest

qa: $(STAMP)
	$(BIN)/qa-build qa_builder/data/sample_reports.csv out/sample --study-dates qa_builder/data/sample_study_dates.csv

bench: $(STAMP)
	$(BIN)/python bench/bench_qa_build.py --reports 20000

phantom: $(STAMP)
	$(BIN)/python -m pipelines.phantom out/phantom --n 300 --seed 0

# The main job on the embedded default: synthetic corpus -> QA tables -> tiny QFT pre-training on CPU.
pretrain: $(STAMP)
	$(BIN)/python -m pipelines.phantom out/phantom --n $(PHANTOM_N) --seed 0 --workers 2
	$(BIN)/qa-build out/phantom/files out/phantom_qa --split-file out/phantom/mimic-cxr-2.0.0-split.csv
	$(BIN)/python -m model.cli pretrain --data out/phantom_qa --images out/phantom --config tiny --out runs/tiny

# Downstream checks of `make pretrain`'s checkpoint: a linear probe for the CheXpert labels qa-build derived
# from the reports (held-out AUROC), on the same architecture untrained and then on the checkpoint, compared
# with it on the same studies (paired bootstrap); then the decoder's answers to every held-out QA pair.
DS_ARGS := --data out/phantom_qa --images out/phantom --cache runs/tiny/cache --no-progress
downstream: $(STAMP)
	@test -f runs/tiny/checkpoint/model.safetensors || $(MAKE) pretrain
	$(BIN)/qft finetune --checkpoint runs/tiny/checkpoint $(DS_ARGS) --out runs/tiny_probe_random --random-init
	$(BIN)/qft finetune --checkpoint runs/tiny/checkpoint $(DS_ARGS) --out runs/tiny_probe --baseline runs/tiny_probe_random
	$(BIN)/qft answer --checkpoint runs/tiny/checkpoint $(DS_ARGS) --out runs/tiny_answers

clean:
	rm -rf out runs
