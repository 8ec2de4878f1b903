# The two commands a newcomer runs: `make serve` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# System packages: redis-server for the cache tests; prometheus (with promtool) for the metrics tests; EGL/Mesa for
# Meta-World's offscreen rendering.
APT_PACKAGES := redis-server prometheus libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The shipped default model: its checkpoint is committed; its repository (ONNX, config.pbtxt) is rebuilt
# from it and the installed encoder, and cached.
DEFAULT_CHECKPOINT := model_repo/default/checkpoint
DEFAULT_REPO := .cache/model_repo/default

MODEL_REPO ?= $(DEFAULT_REPO)
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
.PHONY: setup system-packages serve triton proto test lint typecheck pytest clean

setup: $(STAMP) $(DEFAULT_REPO)/sarm_manifest.json

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# torch goes in first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml clients/pyproject.toml | system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,sim,ray]'
	$(BIN)/pip install -q -e './clients[video,trainer,rl,plot]'
	touch $(STAMP)

$(DEFAULT_REPO)/sarm_manifest.json: $(DEFAULT_CHECKPOINT)/model.safetensors $(DEFAULT_CHECKPOINT)/config.json | $(STAMP)
	rm -rf $(DEFAULT_REPO)
	$(BIN)/sarm export $(DEFAULT_CHECKPOINT) --out $(DEFAULT_REPO) --target cpu

# The gateway (gRPC, and HTTP with /metrics) on the default model, embedded ONNX Runtime backend and in-memory caches (no Triton,
# no Redis needed). SARM_* environment variables configure it (service/sarm_gateway/settings.py).
GATEWAY_PORT ?= 50051
GATEWAY_HTTP_PORT ?= 8080
serve: setup
	$(BIN)/sarm serve --model-repo $(DEFAULT_REPO) --backend local --grpc-port $(GATEWAY_PORT) --http-port $(GATEWAY_HTTP_PORT)

# The real tritonserver (from nvidia-pytriton) on a model repository written by `sarm export`.
triton: setup
	$(BIN)/python -m sarm.triton.server --model-repository $(MODEL_REPO) \
		--grpc-port $(GRPC_PORT) --http-port $(HTTP_PORT) --metrics-port $(METRICS_PORT)

# Regenerate the gRPC code of proto/sarm/v1/sarm.proto in every package that ships it (a test checks it is current).
proto: setup
	$(BIN)/python proto/generate.py

docs: setup  # docs/configuration.md from the settings' field descriptions (a test checks it is current)
	$(BIN)/python docs/generate_configuration.py

lint: setup
	$(BIN)/ruff check sarm tests bench clients service proto
	$(BIN)/ruff format --check sarm tests bench clients service proto

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache
