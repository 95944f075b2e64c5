# Set-up and the two everyday jobs; `make run` and `make test` set up the venvs on first use.
PYTHON ?= python3
VENV ?= .venv
ISOLATED_VENV ?= .venv-isolated
PLUGIN_DIRS := $(patsubst %/pyproject.toml,%,$(sort $(wildcard plugins/*/pyproject.toml)))
PLUGIN_NAMES := $(notdir $(PLUGIN_DIRS))
# What .venv installs of each plugin: the feedback plugin with its PostgreSQL driver (the label store's tests).
PLUGIN_SPECS := $(patsubst plugins/polyfuse-feedback,plugins/polyfuse-feedback[postgresql],$(PLUGIN_DIRS))
PIP = -m pip --disable-pip-version-check
PIP_INSTALL = $(PIP) install --quiet -c constraints.txt
export OMP_NUM_THREADS ?= 1
export HF_HUB_OFFLINE ?= 1
export MPLBACKEND ?= Agg

.PHONY: setup test-services run test test-isolated clean

setup: $(VENV)/.installed test-services

# Debian's PostgreSQL server, Chromium and espeak-ng, for the label store's, the annotation app's and the
# recording script's tests; a no-op when present, and a note (not a failure) without root or apt.
test-services:
	@scripts/install-test-services.sh

# Everything: the core, every plugin, test tools.
$(VENV)/.installed: pyproject.toml constraints.txt $(addsuffix /pyproject.toml,$(PLUGIN_DIRS))
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python $(PIP_INSTALL) -e '.[test,babyai,tune,serve,onnx,ray]' $(foreach spec,$(PLUGIN_SPECS),-e '$(spec)')
	touch $@

# The core and the plugins' third-party dependencies, but no plugin: see scripts/test-isolated.sh.
# A copy of .venv made of hard links, so torch's ~6 GB are on disk once; the copy's scripts get their
# own interpreter line, and pip removes the plugins from the copy only.
$(ISOLATED_VENV)/.installed: $(VENV)/.installed
	rm -rf $(ISOLATED_VENV)
	cp -al $(VENV) $(ISOLATED_VENV)
	grep -lrI '^#!$(abspath $(VENV))/bin/' $(ISOLATED_VENV)/bin | xargs -r sed -i '1s|^#!$(abspath $(VENV))/|#!$(abspath $(ISOLATED_VENV))/|'
	$(ISOLATED_VENV)/bin/python $(PIP) uninstall --quiet --yes $(PLUGIN_NAMES)
	touch $@

run: setup
	$(VENV)/bin/polyfuse run $(ARGS)

# Each plugin's tests run once: with only the core and that plugin installed where they can, and those
# that skip there (they need other plugins, the PostgreSQL driver, the browser) with everything, beside
# the core's tests.
test: setup $(ISOLATED_VENV)/.installed
	scripts/test-isolated.sh $(ISOLATED_VENV) $(PLUGIN_DIRS)
	$(VENV)/bin/python -m pytest tests @build/isolated/skipped-tests.txt $(ARGS)

clean:
	rm -rf $(VENV) $(ISOLATED_VENV) build runs
