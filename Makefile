# The README's two commands: `make quickstart` (main job, offline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# the exact versions of the whole environment the suite last passed with (pip constraints; `make lock` rewrites it)
LOCK := requirements.lock
# test processes: one per core of the 2-core machines this project runs on (each test computes on one thread)
JOBS ?= 2
# the drift check's scratch environment: the newest releases pyproject's bounds allow
LATEST ?= .venv-latest
EXTRAS := .[dev,postgres,hf]

.PHONY: install quickstart test test-slow test-latest lock lint clean reproduce

# pip (not uv/poetry): on this project's machines pip is capped to the torch build that lies on local disk.
# Everything, pip itself included, installs at the lock's versions: a release after the lock cannot break it.
$(STAMP): pyproject.toml requirements-assets.txt $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet -c $(LOCK) pip
	$(PY) -m pip install --quiet -c $(LOCK) -e '$(EXTRAS)'
	$(PY) -m pip install --quiet --no-deps -r requirements-assets.txt
	touch $(STAMP)

install: $(STAMP)
	@dpkg -s dataset-fashion-mnist >/dev/null 2>&1 || echo "note: apt-get install dataset-fashion-mnist for the fashion-mnist dataset (its test is skipped without it, outside CI)"

quickstart: install
	$(VENV)/bin/tlr quickstart

# a published finding in full: make reproduce NAME=few_shot_crossing (see benchmarks/reproductions/)
reproduce: install
	$(VENV)/bin/tlr reproduce $(NAME)

lint: install
	$(VENV)/bin/ruff check tl_research tests benchmarks examples

# the suite but the tests marked slow (real weights and data end to end, every finding's smoke variant among them;
# most take a minute or more): the everyday loop. `make test-slow` runs those; CI runs both.
test: install lint
	$(PY) -m pytest -q -rs -n $(JOBS) -m "not slow" --durations=15

test-slow: install
	$(PY) -m pytest -q -rs -n $(JOBS) -m slow --durations=15

# The drift check: a scratch environment with the newest versions pyproject's bounds allow (no lock), and the fast
# suite on it, so that a breaking release is found here before users find it. Run it before every lock update.
test-latest:
	rm -rf $(LATEST)
	python3 -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e '$(EXTRAS)'
	$(LATEST)/bin/python -m pip install --quiet --no-deps -r requirements-assets.txt
	$(LATEST)/bin/python -m pip freeze --all --exclude-editable > $(LATEST)/freeze.txt
	$(LATEST)/bin/python -m pytest -q -rs -n $(JOBS) -m "not slow" --durations=15

# A new lock: the drift check's fresh resolve, written as the lock only once the suite passed on it.
lock: test-latest
	{ echo "# The exact environment the suite passed with, written by \`make lock\` on $$(date -u +%F) (a fresh resolve,"; \
	  echo "# then the suite). \`make install\` uses it as pip constraints; pyproject.toml's ranges install without it."; \
	  cat $(LATEST)/freeze.txt; } > $(LOCK)
	rm -f $(STAMP)
	@echo "wrote $(LOCK); make test installs it"

clean:
	rm -rf runs .pytest_cache
