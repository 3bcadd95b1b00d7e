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

# Debian packages: the offline default dataset; shellcheck for the tests of
# launch/, and munge and slurm-wlm for the one-node SLURM cluster of
# tests/test_slurm.py (apt needs root or sudo; skipped when already installed).
APT_GET = $$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get
data:
	@[ -f $(FMNIST) ] || { $(APT_GET) update -qq && $(APT_GET) install -y -qq dataset-fashion-mnist; }

TEST_PACKAGES = shellcheck:shellcheck slurmctld:slurm-wlm munged:munge
test-deps:
	@missing=$$(for p in $(TEST_PACKAGES); do PATH=$$PATH:/usr/sbin command -v $${p%%:*} >/dev/null || echo $${p#*:}; done); \
	[ -z "$$missing" ] || { $(APT_GET) update -qq && DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq $$missing; }

demo: setup
	$(PY) -m tfx_jax.main --config=configs/default.py --local_shards=0

test: setup test-deps
	$(PY) -m pytest -q -n auto --dist worksteal

clean:
	rm -rf $(VENV) runs .pytest_cache
