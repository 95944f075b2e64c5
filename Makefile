# Set-up and the two everyday jobs. `make run` and `make test` set up .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PLUGINS := $(sort $(wildcard plugins/*/pyproject.toml))
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(PLUGINS))
PIP_INSTALL = $(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1

.PHONY: setup run test test-isolated clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt $(PLUGINS)
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -e '.[test,babyai]' $(addprefix -e ,$(PLUGIN_DIRS))
	touch $@

run: setup
	$(VENV)/bin/polyfuse run $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest tests $(addsuffix /tests,$(PLUGIN_DIRS)) $(ARGS)

clean:
	rm -rf $(VENV) runs
