# Two commands on a fresh machine: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
DEMO_STAMP := $(VENV)/.demo-installed
TEST_STAMP := $(VENV)/.test-installed

.PHONY: demo test clean

$(PY):
	$(PYTHON) -m venv $(VENV)

# torch and torchvision are pinned in pyproject.toml; pip takes them from the local wheel store.
# pip --quiet hides its progress: say what is coming and how long it takes before each quiet install
$(DEMO_STAMP): pyproject.toml | $(PY)
	@echo "installing inceptionv4 with torch, ONNX Runtime, OpenVINO/NNCF, FastAPI and Captum into $(VENV) (1-3 minutes on a fresh machine) ..."
	$(PY) -m pip install --quiet -e '.[export,openvino,serve,explain]'
	touch $@

$(TEST_STAMP): pyproject.toml | $(PY)
	@echo "installing the test dependencies (timm, Keras, TensorFlow, tritonclient, ...) into $(VENV) (2-4 minutes on a fresh machine) ..."
	$(PY) -m pip install --quiet -e '.[test]'
	# facenet-pytorch pins an old torch; its model code runs on ours, so take it without its pins
	$(PY) -m pip install --quiet --no-deps facenet-pytorch==2.6.0
	touch $@

demo: $(DEMO_STAMP)
	$(PY) -m inceptionv4 demo --out runs/demo

# two pytest processes (pytest-xdist), a file each at a time: 7-9 minutes on 2 cores against 14-15
# for one process; TEST_WORKERS=1 runs them in one
TEST_WORKERS ?= 2
test: $(TEST_STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile
	# timm's own tests/test_models.py on our networks as timm sees them (about a minute)
	TEST_WORKERS=$(TEST_WORKERS) PY=$(PY) bash tests/scripts/timm_models.sh

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info runs
