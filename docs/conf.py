"""Sphinx configuration for bayes_gmm.

The notebooks in ``examples/`` are rendered from their stored outputs (never executed
here: ``nb_execution_mode = "off"``); ``docs/examples`` is a link to them.
"""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("MPLBACKEND", "Agg")

import bayes_gmm

project = "bayes_gmm"
author = "the bayes_gmm developers"
copyright = "2026, the bayes_gmm developers"
release = bayes_gmm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
    "myst_nb",
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "examples/*.zarr", "examples/*_results"]
master_doc = "index"

# Notebooks: show the stored outputs; the test suite executes them separately.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "colon_fence"]
# Outputs such as DataFrame HTML and PNG figures are rendered; ignore widget metadata.
suppress_warnings = ["mystnb.unknown_mime_type"]

# scikit-learn's metadata-routing helpers are generated methods with docstrings that link
# into scikit-learn's own docs; they are not part of our API.
autodoc_default_options = {
    "exclude-members": "set_fit_request,set_score_request,set_predict_request,"
    "get_metadata_routing,set_params,get_params",
}
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_xref_param_type = False

html_theme = "alabaster"
html_static_path = []
html_title = f"bayes_gmm {release}"

intersphinx_mapping = {}

_TRAILING_UNDERSCORE = re.compile(r"\b([A-Za-z]\w*_)(?=[\s,)+*/-])")


def _escape_attribute_names_in_shapes(app, what, name, obj, options, lines):
    """Keep ``shape (n_iter_ + 1,)`` literal: in reST a trailing underscore is a link."""
    for i, line in enumerate(lines):
        if "shape (" in line and "`" not in line:
            lines[i] = _TRAILING_UNDERSCORE.sub(lambda m: m.group(1)[:-1] + "\\_", line)


def setup(app):
    # Run before numpydoc (priority 500) turns the sections into reST.
    app.connect("autodoc-process-docstring", _escape_attribute_names_in_shapes, priority=100)
