"""Rerun example notebooks in place with their stored settings, and save their outputs.

The stored outputs are what the docs render and what ``tests/test_notebooks.py`` compares
with a fresh run (``test_stored_outputs_are_current``, slow): rerun a notebook whenever a
change in the package alters its numbers.

Usage::

    python examples/rerun.py                    # every notebook
    python examples/rerun.py 03_foot_sizes 05   # those whose name starts so
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent


def execute(path, workdir, fast=False):
    """Run the notebook at ``path`` in ``workdir`` as the tests do; return it executed.

    ``fast`` sets ``BAYES_GMM_FAST=1`` (short chains); figures render inline as in
    Jupyter, whatever ``MPLBACKEND`` the caller's environment sets.
    """
    import nbclient
    import nbformat

    env = {"MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    saved = {name: os.environ.get(name) for name in (*env, "BAYES_GMM_FAST")}
    os.environ.update(env)
    if fast:
        os.environ["BAYES_GMM_FAST"] = "1"
    else:
        os.environ.pop("BAYES_GMM_FAST", None)
    try:
        nb = nbformat.read(path, as_version=4)
        client = nbclient.NotebookClient(
            nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(workdir)}}
        )
        client.execute()  # raises CellExecutionError with the failing cell's traceback
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return nb


def main(argv=None):
    import nbformat

    prefixes = sys.argv[1:] if argv is None else argv
    paths = [
        p
        for p in sorted(EXAMPLES.glob("*.ipynb"))
        if not prefixes or any(p.stem.startswith(prefix) for prefix in prefixes)
    ]
    if not paths:
        print(f"no notebook in {EXAMPLES} starts with {' or '.join(prefixes)}", file=sys.stderr)
        return 2
    for path in paths:
        with tempfile.TemporaryDirectory() as workdir:
            nb = execute(path, workdir)
        tmp = path.with_name(path.name + ".tmp")  # a crash never leaves half a notebook
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
        print(f"{path.name}: rerun and saved", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
