"""Run every notebook in notebooks/ top to bottom in a fresh kernel.

Notebooks are not graded (no points): these are self-checks of the course material, run with
`python -m pytest --impl solutions` (see conftest.py). A notebook fails if any cell raises,
which includes the assertions each demonstration makes about what it shows.
"""
import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 60      # seconds for any one cell
NOTEBOOK_LIMIT = 60    # seconds for a whole notebook


@pytest.mark.selfcheck
@pytest.mark.timeout(NOTEBOOK_LIMIT + 60)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path):
    nb = nbformat.read(path, as_version=4)
    kernel_name = nb.metadata.get("kernelspec", {}).get("name", "python3")
    client = nbclient.NotebookClient(
        nb,
        timeout=CELL_TIMEOUT,
        kernel_name=kernel_name,
        allow_errors=False,
        resources={"metadata": {"path": str(NOTEBOOK_DIR)}},   # cwd = notebooks/
    )
    started = time.monotonic()
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as error:
        pytest.fail(f"{path.name}: a cell failed:\n{error}", pytrace=False)
    except nbclient.exceptions.CellTimeoutError as error:
        pytest.fail(f"{path.name}: a cell ran longer than {CELL_TIMEOUT} s:\n{error}", pytrace=False)
    elapsed = time.monotonic() - started
    assert elapsed < NOTEBOOK_LIMIT, f"{path.name} took {elapsed:.1f} s (limit {NOTEBOOK_LIMIT} s)"
