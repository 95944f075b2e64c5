#!/usr/bin/env bash
# Installs the Debian packages the plugins' tests run against, when they are missing:
#   postgresql  polyfuse-feedback's label-store tests (a throwaway server per test session)
#   chromium    polyfuse-feedback's annotation-app browser tests (driven headless by Playwright)
#   espeak-ng   polyfuse-audio's test of the script that speaks the shipped recordings
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
if ! command -v espeak-ng >/dev/null 2>&1; then
  missing+=(espeak-ng)
fi
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: ${missing[*]} not installed (the tests that need them will skip);" \
       "install with: apt-get install ${missing[*]}" >&2
  exit 0
fi
echo "installing Debian's ${missing[*]} for the plugins' tests"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
  echo "note: apt-get could not install ${missing[*]}; the tests that need them will skip" >&2
fi
exit 0
