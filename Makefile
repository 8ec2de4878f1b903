# The two commands a newcomer runs: `make serve` and `make test`. Both set everything up first.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
# System packages: redis-server for the cache tests; EGL/Mesa for Meta-World's offscreen rendering.
APT_PACKAGES := redis-server libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 python3-venv
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
DEMO_DATA := out/demo-pick-place

MODEL_REPO ?= model_repo
.PHONY: setup system-packages serve triton proto test lint typecheck pytest clean

setup: $(STAMP)

system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing system packages: $$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

# torch goes in first and pinned: an unpinned torch would pull a multi-GB CUDA build.
$(STAMP): pyproject.toml | system-packages
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,sim]'
	touch $(STAMP)

# Until the gateway exists (issue "The gRPC gateway"), serve what exists: a demo dataset, validated.
serve: setup
	test -f $(DEMO_DATA)/meta/info.json || $(BIN)/sarm data generate --task pick-place-v3 --episodes 6 --out $(DEMO_DATA) --image-size 128 --seed 0
	$(BIN)/sarm data validate $(DEMO_DATA)
	$(BIN)/sarm data info $(DEMO_DATA)
	@echo "The reward service itself (sarm serve) is not built yet: see the open issues."

# The real tritonserver (from nvidia-pytriton) on a model repository written by `sarm export`.
triton: setup
	$(BIN)/python -m sarm.triton.server --model-repository $(MODEL_REPO)

# Regenerate the gRPC code of proto/sarm/v1/sarm.proto in every package that ships it (a test checks it is current).
proto: setup
	$(BIN)/python proto/generate.py

lint: setup
	$(BIN)/ruff check sarm tests bench clients service proto

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/pytest -q

test: lint typecheck pytest

clean:
	rm -rf $(VENV) out .mypy_cache .ruff_cache .pytest_cache
