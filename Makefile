# The two commands of the README: `make serve` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FASHION_DATA_DIR ?= $(abspath ../shared/data)

.PHONY: install test lint train evaluate clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: these wheels are the ones on the development machines' disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q

# Frozen-trunk training of the attention model and the global baseline, then the test report.
train: install
	$(BIN)/python -m model.train --out checkpoints/attention
	$(BIN)/python -m model.train --architecture global --out checkpoints/global

evaluate: install
	$(BIN)/python -m model.evaluate --checkpoint checkpoints/attention/best.pt \
		--checkpoint checkpoints/global/best.pt --out reports/ccp_eval.json --figure docs/attention.png

clean:
	rm -rf .cache checkpoints
