#!/usr/bin/env bash
# Installs the Debian packages polyfuse-feedback's tests run against, when they are missing:
#   postgresql  the label store's PostgreSQL tests (a throwaway server per test session)
#   chromium    the annotation app's browser tests (driven headless by Playwright)
# Never fails the set-up: without root or apt-get it says so, and those tests skip with the same advice.
# PG_BIN_GLOB and CHROMIUM (tests only) replace where Debian puts the server's binaries and the browser.
set -uo pipefail
missing=()
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "${PG_BIN_GLOB:-/usr/lib/postgresql/*/bin}/initdb" >/dev/null; then
  missing+=(postgresql)
fi
if ! command -v "${CHROMIUM:-chromium}" >/dev/null 2>&1; then
  missing+=(chromium)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${missing[*]} not installed (the tests that need them will skip);" \
       "install with: apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "installing Debian's ${missing[*]} for polyfuse-feedback's tests"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "note: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
fi
exit 0
