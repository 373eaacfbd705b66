"""A pytest plugin that gives nbval the reference outputs of `# NBVAL_CHECK_OUTPUT` cells.

Notebooks are committed without outputs, so each check cell keeps what it must print in its
metadata (`colorkit.expected_outputs`, written by `python -m colorkit.course pin`). Before the
tests run, those become the cell's reference outputs; every other cell is only run (--nbval-lax).
A check cell with nothing pinned gets an empty reference, so it fails as soon as it prints.
(Left alone, nbval skips the comparison for cells without an execution count, so the clean
notebooks would check nothing.) The project's conftest.py loads this plugin; elsewhere use
`pytest -p colorkit.nbcheck --nbval-lax NOTEBOOK`.

A cell whose measured cost needs more than --nbval-cell-timeout keeps a timeout of its own in its
metadata (`colorkit.timeout`, written by `python -m colorkit.course timeouts`); it replaces nbval's
for that cell, and pytest-timeout's limit grows with it.
"""

import nbformat
import pytest

from colorkit.course import CELL_TIMEOUT_KEY, EXPECTED_KEY, is_check_cell


def _own_timeout(item) -> float | None:
    cell = getattr(item, "cell", None)
    if cell is None or not hasattr(item, "compare_outputs"):
        return None
    limit = cell.metadata.get("colorkit", {}).get(CELL_TIMEOUT_KEY)
    return None if limit is None else float(limit)


def _pytest_timeout(config) -> float:
    """pytest-timeout's limit per test from the ini file (inf without the plugin or a limit)."""
    try:
        return float(config.getini("timeout") or "inf")
    except ValueError:
        return float("inf")


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        limit = _own_timeout(item)
        if limit is not None and limit + 60 > _pytest_timeout(config):
            item.add_marker(pytest.mark.timeout(limit + 60))     # pytest-timeout must not stop it first
        cell = getattr(item, "cell", None)
        if cell is None or not hasattr(item, "compare_outputs") or not is_check_cell(cell):
            continue
        expected = cell.metadata.get("colorkit", {}).get(EXPECTED_KEY, [])
        cell.outputs = [nbformat.from_dict(out) for out in expected]
        cell.execution_count = 1  # nbval compares outputs only for cells that look executed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    """nbval reads --nbval-cell-timeout when the cell runs: a cell with its own timeout gets it."""
    limit = _own_timeout(item)
    if limit is None:
        yield
        return
    option = item.config.option
    default, option.nbval_cell_timeout = option.nbval_cell_timeout, limit
    try:
        yield
    finally:
        option.nbval_cell_timeout = default
