# `make demo` and `make test` work on a fresh machine from a clean clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: setup data test-deps demo test clean

setup: $(VENV)/.installed data

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Debian packages: the offline default dataset, and shellcheck for the tests of
# launch/ (apt needs root or sudo; skipped when already installed).
APT_GET = $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get
data:
	@[ -f $(FMNIST) ] || { $(APT_GET) update -qq && $(APT_GET) install -y -qq dataset-fashion-mnist; }

test-deps:
	@command -v shellcheck >/dev/null || { $(APT_GET) update -qq && $(APT_GET) install -y -qq shellcheck; }

demo: setup
	$(PY) -m tfx_jax.main --config=configs/default.py --local_shards=0

test: setup test-deps
	$(PY) -m pytest -q -n auto --dist worksteal

clean:
	rm -rf $(VENV) runs .pytest_cache
