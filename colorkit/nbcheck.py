"""A pytest plugin that gives nbval the reference outputs of `# NBVAL_CHECK_OUTPUT` cells.

Notebooks are committed without outputs, so each check cell keeps what it must print in its
metadata (`colorkit.expected_outputs`, written by `python -m colorkit.course pin`). Before the
tests run, those become the cell's reference outputs; every other cell is only run (--nbval-lax).
A check cell with nothing pinned gets an empty reference, so it fails as soon as it prints.
(Left alone, nbval skips the comparison for cells without an execution count, so the clean
notebooks would check nothing.) The project's conftest.py loads this plugin; elsewhere use
`pytest -p colorkit.nbcheck --nbval-lax NOTEBOOK`.
"""

import nbformat

from colorkit.course import EXPECTED_KEY, is_check_cell


def pytest_collection_modifyitems(session, config, items):
    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or not hasattr(item, "compare_outputs") or not is_check_cell(cell):
            continue
        expected = cell.metadata.get("colorkit", {}).get(EXPECTED_KEY, [])
        cell.outputs = [nbformat.from_dict(out) for out in expected]
        cell.execution_count = 1  # nbval compares outputs only for cells that look executed
