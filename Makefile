# Two commands on a fresh machine: `make test` and `make demo` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test venv clean

venv: $(STAMP)

# torch and torchvision are pinned in pyproject.toml; pip takes them from the local wheel store.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -e '.[test]'
	# facenet-pytorch pins an old torch; its model code runs on ours, so take it without its pins
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
