# The two commands of the README: `make serve` (the main job) and `make test`.
# Both set up everything they need (a virtual environment in .venv) on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export FASHION_DATA_DIR ?= $(abspath ../shared/data)

HOST ?= 127.0.0.1
PORT ?= 8000
REDIS_PORT ?= 6379

.PHONY: install install-dev redis-server browser test lint typecheck serve serve-redis train evaluate shop-the-look clean

# What the service, the indexer and training need (make serve): a newcomer waits for no test tools.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: these wheels are the ones on the development machines' disk.
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e .
	touch $@

# And what the tests, the linters, the docs and bench/ add (Ray, ONNX Runtime, selenium, mkdocs…).
$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed
install-dev: $(BIN)/.installed-dev

lint: install-dev
	$(BIN)/ruff check .

# mypy with the pydantic plugin over app/, indexer/ and model/ (settings in pyproject.toml).
typecheck: install-dev
	$(BIN)/mypy

# The tests start their own redis-server on a free port: install Debian's when it is missing.
redis-server:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

# The page's real-browser test drives Debian's headless chromium (no browser downloads).
browser:
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; }

test: install-dev lint typecheck redis-server browser
	$(BIN)/pytest -q

# The documentation site (mkdocs.yml, docs/ into site/), strict: a broken link, anchor or reference fails.
# `make test` builds it too. NO_MKDOCS_2_WARNING quiets mkdocs-material's end-of-life banner.
.PHONY: docs
docs: install-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict
test: docs

# Data, model and bundle (each only if missing), then the API on localhost: in-memory
# coordination, local FAISS files, no Redis.
serve: install
	$(BIN)/python -m app.bootstrap
	$(BIN)/python -m app --host $(HOST) --port $(PORT)

# The same with Redis coordination and a separate indexer worker (redis-server must be installed).
serve-redis: install
	$(BIN)/python -m app.bootstrap
	redis-server --port $(REDIS_PORT) --save '' --appendonly no --daemonize yes
	FASHION_REDIS_URL=redis://127.0.0.1:$(REDIS_PORT)/0 FASHION_EMBEDDED_WORKER=false $(BIN)/python -m app.worker & \
	FASHION_REDIS_URL=redis://127.0.0.1:$(REDIS_PORT)/0 FASHION_EMBEDDED_WORKER=false \
		$(BIN)/python -m app --host $(HOST) --port $(PORT)

# The compose stack in one command (docker/up.sh): .env with a generated admin key on first use,
# the image built when missing (offline too), redis, the API and the worker, waiting for /readyz.
# A first start indexes the catalogue by itself (CATALOGUE_DIR, default $(FASHION_DATA_DIR)/fashion-product).
.PHONY: up down
up:
	bash docker/up.sh
down:
	bash docker/compose.sh down

# Frozen-trunk training of the attention model and the global baseline, then the test report.
train: install
	$(BIN)/python -m model.train --out checkpoints/attention --products $(FASHION_DATA_DIR)/fashion-product
	$(BIN)/python -m model.train --architecture global --classification sigmoid --group-weight 0 --out checkpoints/global

evaluate: install
	$(BIN)/python -m model.evaluate --checkpoint checkpoints/attention/best.pt \
		--checkpoint checkpoints/global/best.pt --out reports/ccp_eval.json --figure docs/attention.png

shop-the-look: install
	$(BIN)/python -m indexer.evaluate --checkpoint $(or $(FASHION_CHECKPOINT),weights/ccp-attention.pt) --bundles bundles \
		--out reports/shop_the_look.json --figure docs/shop_the_look.png

clean:
	rm -rf .cache checkpoints
