# Two entry points for a fresh machine (see README): `make train` and `make test`.
# Both create .venv on first use. A torch is installed first only when the venv has
# none: "torch==2.13.*" resolves to the CPU wheel in this project's package cache,
# while pyproject.toml keeps the loose "torch>=2.3" so CUDA users keep their build.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The data folder: $CEMNET_DATA when set; else ../shared/data, the offline copy of MNIST and CIFAR-10
# beside the checkout on the machines cemnet is developed on, when it exists; else the per-user cache
# (where `cemnet train` downloads to).
DATA ?= $(or $(CEMNET_DATA),$(firstword $(wildcard ../shared/data) $(HOME)/.cache/cemnet))
EPOCHS ?= 2

.PHONY: setup train test slow bench docs data-dir clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet "torch==2.13.*"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

train: setup
	$(BIN)/cemnet train --model cemnet-mnist --dataset mnist --epochs $(EPOCHS) --data-dir $(DATA) --out runs/cemnet-mnist --overwrite

test: setup
	CEMNET_DATA=$(DATA) $(BIN)/python -m pytest

slow: setup
	CEMNET_DATA=$(DATA) $(BIN)/python -m pytest -m slow

bench: setup
	$(BIN)/cemnet bench --out docs/bench-full.json

docs: setup
	$(BIN)/pdoc -o build/api cemnet cemnet.runtime cemnet.models cemnet.ops cemnet.convert cemnet.training cemnet.data cemnet.bench cemnet.reproduce cemnet.plot cemnet.timing

data-dir:  # the data folder the targets use: export CEMNET_DATA=$$(make -s data-dir)
	@echo $(abspath $(DATA))

clean:
	rm -rf $(VENV) runs .pytest_cache
