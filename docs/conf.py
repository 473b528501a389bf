"""Sphinx configuration for bayes_gmm.

The notebooks in ``examples/`` are rendered from their stored outputs (never executed
here: ``nb_execution_mode = "off"``); ``docs/examples`` is a link to them.
"""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))
sys.path.insert(0, os.path.abspath("_ext"))
os.environ.setdefault("MPLBACKEND", "Agg")

import bayes_gmm

project = "bayes_gmm"
author = "the bayes_gmm developers"
copyright = "2026, the bayes_gmm developers"
release = bayes_gmm.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "numpydoc",
    "myst_nb",
    "mathml_math",  # docs/_ext: formulas become MathML at build time (no CDN script)
]
html_math_renderer = "mathml"

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
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

# The PyData theme (as PyMC, ArviZ, pandas): a wide content column for tables and code.
html_theme = "pydata_sphinx_theme"
html_static_path = ["_static"]
html_css_files = ["wide.css"]
html_title = f"bayes_gmm {release}"
# No left sidebar: the pages are few (all in the top bar) and tables need the width.
html_sidebars = {"**": []}
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}

_TRAILING_UNDERSCORE = re.compile(r"\b([A-Za-z]\w*?)_(?=[\s,)+*/-]|$)")


_LITERAL = re.compile(r"(``.*?``|`[^`]*`_{0,2})")
_NAME_ONLY = re.compile(r"^\s*\w+\s*$")
_PARAM_HEAD = re.compile(r"^(\s*[\w, *]+ : )(.*)$")


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    """Keep fitted-attribute names such as ``n_iter_`` literal outside backticks.

    In reST a bare word ending in ``_`` is a link to a target of that name, so docstrings
    that write ``shape (n_iter_ + 1,)`` or ``(component, feature, feature_)`` would fail
    the -W build with "Unknown target name".
    """
    for i, line in enumerate(lines):
        if _NAME_ONLY.match(line):
            continue  # a parameter/attribute name: numpydoc handles it
        head, rest = "", line
        if match := _PARAM_HEAD.match(line):  # "idata_ : type": escape the type only
            head, rest = match.group(1), match.group(2)
        parts = _LITERAL.split(rest)
        parts[::2] = [_TRAILING_UNDERSCORE.sub(r"\1\\_", part) for part in parts[::2]]
        lines[i] = head + "".join(parts)


def setup(app):
    # Run before numpydoc (priority 500) turns the sections into reST.
    app.connect("autodoc-process-docstring", _escape_trailing_underscores, priority=100)
