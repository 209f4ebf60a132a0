# Two commands for a newcomer: `make run` (the main job) and `make test`. Both set up .venv first.
VENV ?= .venv
PYTHON ?= python3
BIN := $(VENV)/bin

.PHONY: install run preview test lint format bench faults clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The embedded default in the foreground: Temporal dev server, worker, gateway on :8000, SQLite
# store in .sopflow/, sop_definitions/ deployed. Ctrl-C stops everything; runs survive a restart.
run: install
	$(BIN)/sopflow up --teams examples/teams.yaml

# Preview the callback SOP for a lead whose calls go unanswered until the third retry books.
preview: install
	$(BIN)/sopflow sop validate sop_definitions/
	$(BIN)/sopflow sop simulate sop_definitions/new_lead_callback.yaml \
	  --start 2026-12-01T09:10 --phone +12125550123 --contact first_name=Ann \
	  --outcome first_call=no_answer@12m --outcome retry_calls=busy@20m \
	  --outcome retry_calls=no_answer@10m \
	  --outcome 'retry_calls=booked@5m:appointment_at=2026-12-05T11:00,store_name=Downtown,store_address=12 Market St'

# tests/browser drive Debian's Chromium; installed when missing (CI runs as root on a fresh
# machine), `apt-get update` only if the install fails without it.
CHROMIUM := /usr/bin/chromium
APT_CHROMIUM := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
$(CHROMIUM):
	$(APT_CHROMIUM) || (apt-get update -qq && $(APT_CHROMIUM))

test: install $(CHROMIUM)
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/python bench/bench_sop.py
	$(BIN)/python bench/bench_runs.py
	$(BIN)/python bench/bench_scores.py
	$(BIN)/python bench/bench_twilio.py
	$(BIN)/python bench/bench_email.py
	$(BIN)/python bench/bench_production.py

# Kill a worker, a gateway and the Temporal server mid-storm, with the sandbox's faults on; then
# count accepted events without a run, duplicate touches and lost STOPs (exit 1 unless all 0).
faults: install
	$(BIN)/python bench/fault_suite.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
