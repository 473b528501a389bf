"""Render the docs' math to MathML when the site is built: no script, no network.

Sphinx's default (MathJax) fetches a script from a CDN, so offline the formulas stay raw
TeX. Browsers display MathML natively, so converting each formula once at build time
(with ``latex2mathml``) gives pages that render anywhere, with no JavaScript.
"""

from docutils import nodes
from latex2mathml.converter import convert
from sphinx.util.math import get_node_equation_number


def _mathml(latex, display):
    return convert(latex.strip(), display=display)


def visit_math(self, node):
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
    self.body.append(_mathml(node.astext(), "inline"))
    self.body.append("</span>")
    raise nodes.SkipNode


def visit_displaymath(self, node):
    self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
    if node["number"]:
        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})</span>')
    # A block may hold several equations, one per blank-line-separated part.
    for part in node.astext().split("\n\n"):
        if part.strip():
            self.body.append(_mathml(part, "block"))
    self.body.append("</div>\n")
    raise nodes.SkipNode


def setup(app):
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_displaymath, None))
    return {"parallel_read_safe": True, "parallel_write_safe": True}
