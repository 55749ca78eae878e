# Two entry points: `make run` (the main job) and `make test` (what .ci/run calls).
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
ARGS ?=

.PHONY: run test test-fast clean

$(INSTALLED): pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --disable-pip-version-check -q -e ".[test]"
	touch $(INSTALLED)

run: $(INSTALLED)
	$(VENV)/bin/fedtosc run $(ARGS)

# Four pytest-xdist workers on two cores: part of the slow tier is waiting (Flower's heartbeat
# expiry, SuperNode polling, reconnect back-off), and workers overlap those waits. loadgroup keeps a module
# marked xdist_group (one whose tests build knowledge stores into the session's cache) on one worker.
# --no-loadscope-reorder keeps the order tests/conftest.py gives (slow tests first), so no long run
# starts last. tests/conftest.py gives every test process one torch thread (more only spin on 2 cores).
test: $(INSTALLED)
	$(PYTHON) -m pytest -q -p no:cacheprovider -n 4 --dist loadgroup --no-loadscope-reorder --durations=15 $(PYTEST_ARGS)

# The inner loop: everything but the tests marked slow (Flower, Ray, deployments, training runs).
# These are CPU-bound, so one worker per core.
test-fast: $(INSTALLED)
	$(PYTHON) -m pytest -q -p no:cacheprovider -n 2 --dist loadgroup -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) runs .flwr_home
