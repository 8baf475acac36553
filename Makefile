# carhub: `make run` serves it, `make test` tests it. Both set up .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WEB_CONCURRENCY ?= 2
export FLASK_APP := app:create_app

.PHONY: run test lint bench-api migrate clean

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@

## run: migrate, seed, ensure the admin, then serve the API and run the consumer beside it
run: $(BIN)/.installed
	PORT=$(PORT) WEB_CONCURRENCY=$(WEB_CONCURRENCY) $(BIN)/python -m scripts.run

## test: the whole suite (embedded always; PostgreSQL, Redis, RabbitMQ where reachable)
test: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

migrate: $(BIN)/.installed
	$(BIN)/flask db upgrade

clean:
	rm -rf $(VENV) instance .pytest_cache
