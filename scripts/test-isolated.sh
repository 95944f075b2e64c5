#!/usr/bin/env bash
# Runs each plugin's own tests with only the core and that plugin installed.
# The venv holds the core and every plugin's third-party dependencies; each plugin
# is installed into a private folder that alone is put on PYTHONPATH.
# The tests that skip here (they need another plugin) are listed in
# build/isolated/skipped-tests.txt, which `make test` then runs in the venv that has everything.
set -euo pipefail
venv=${1:?usage: test-isolated.sh VENV PLUGIN_DIR...}
shift
mkdir -p build/isolated
export POLYFUSE_SKIPPED_TESTS="$PWD/build/isolated/skipped-tests.txt"
: > "$POLYFUSE_SKIPPED_TESTS"
for plugin in "$@"; do
  name=$(basename "$plugin")
  target="build/isolated/$name"
  rm -rf "$target" "$plugin/build"  # a stale build/ would install modules deleted since
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation \
    --target "$target" "$plugin"
  echo "== $name installed alone with the core =="
  PYTHONPATH="$PWD/$target:$PWD/scripts" "$venv/bin/python" -m pytest -q -p no:cacheprovider -p record_skips \
    "$plugin/tests"
done
