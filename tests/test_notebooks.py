"""Every example notebook runs top to bottom (short chains via BAYES_GMM_FAST=1).

The notebooks are stored with the outputs of a full run (they are rendered in the docs);
here they are executed on a copy, so a change in the package that breaks an example fails
the suite. The Bayesian fits use the numba log-density kernel, which compiles once for
every model shape and is cached on disk, so the four notebooks take about a minute together.
"""

import os
import time
from pathlib import Path

import nbclient
import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_the_four_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_choosing_k.ipynb",
        "03_foot_sizes.ipynb",
        "04_iris.ipynb",
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "execute and save the notebook"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the stored notebook shows no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path, monkeypatch):
    monkeypatch.setenv("BAYES_GMM_FAST", "1")
    # Figures render inline as in Jupyter, whatever MPLBACKEND the caller's environment sets.
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    client = nbclient.NotebookClient(
        nb,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()  # raises CellExecutionError with the failing cell's traceback
    elapsed = time.perf_counter() - start
    print(f"{path.name}: {elapsed:.1f} s")
    assert os.listdir(tmp_path) == []  # notebooks clean up after themselves
