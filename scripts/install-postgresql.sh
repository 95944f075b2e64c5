#!/usr/bin/env bash
# Installs Debian's PostgreSQL server for the label store's tests (polyfuse-feedback) when it is missing.
# Never fails the set-up: without root or apt-get it says so, and those tests skip with the same advice.
# PG_BIN_GLOB (tests only) replaces where Debian puts the server's binaries.
set -uo pipefail
if command -v initdb >/dev/null 2>&1 || compgen -G "${PG_BIN_GLOB:-/usr/lib/postgresql/*/bin}/initdb" >/dev/null; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: PostgreSQL's server is not installed (the label store's PostgreSQL tests will skip);" \
       "install it with: apt-get install postgresql" >&2
  exit 0
fi
echo "installing Debian's postgresql package for the label store's tests"
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends postgresql >/dev/null; }; then
  echo "note: apt-get could not install postgresql; the label store's PostgreSQL tests will skip" >&2
fi
exit 0
