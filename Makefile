# `make demo` and `make test` work on a fresh machine from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data demo test bench clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The offline default dataset: Debian's dataset-fashion-mnist (needs root or sudo).
data:
	@if [ ! -f $(FMNIST) ]; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq dataset-fashion-mnist; \
	fi

demo: setup
	$(PY) -m tfx_jax.main --config=configs/default.py

test: setup
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
