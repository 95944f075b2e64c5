"""pytest plugin for scripts/test-isolated.sh: writes the node ids of the tests that skipped.

A plugin's test that cannot run with only the core and that plugin installed
(it needs another plugin, the PostgreSQL driver, the browser) skips there;
``make test`` runs exactly those again in the venv that has everything, so
every plugin test runs once, in the narrowest install it can run in.
The list goes to the file named by ``POLYFUSE_SKIPPED_TESTS``, one id a line,
appended: one file collects every plugin's skips.
"""

from __future__ import annotations

import os

import pytest

_recorded: set[str] = set()


def _record(report: pytest.CollectReport | pytest.TestReport) -> None:
    path = os.environ.get("POLYFUSE_SKIPPED_TESTS")
    if not path or not report.skipped or hasattr(report, "wasxfail") or report.nodeid in _recorded:
        return
    _recorded.add(report.nodeid)
    with open(path, "a", encoding="utf-8") as listing:
        listing.write(report.nodeid + "\n")


def pytest_collectreport(report: pytest.CollectReport) -> None:
    _record(report)  # a module that skips as a whole (pytest.importorskip at its top)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _record(report)
