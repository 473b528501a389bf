"""The Sphinx site builds without a single warning (-W), from the stored notebook outputs."""

import re
import subprocess
import sys
from pathlib import Path

import latex2mathml  # noqa: F401  (declared in the test extra: a missing one must fail)
import myst_nb  # noqa: F401
import numpydoc  # noqa: F401
import pydata_sphinx_theme  # noqa: F401
import sphinx  # noqa: F401

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-b",
            "html",
            "-W",
            "--keep-going",
            "-q",
            "-d",
            str(tmp_path / "doctrees"),
            str(DOCS),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-5000:]
    # The pages exist and carry their content.
    api = (out / "api.html").read_text()
    for name in [
        "GaussianMixture",
        "BayesianGaussianMixture",
        "GaussianMixturePrior",
        "select_model",
        "ModelSelection",
        "load_iris",
        "make_mixture",
        "plot_clusters",
        "plot_trace_dist",
    ]:
        assert (
            f'id="bayes_gmm.{name}' in api
            or f'id="bayes_gmm.datasets.{name}' in api
            or (f'id="bayes_gmm.plots.{name}' in api)
        ), name
    guide = (out / "user_guide.html").read_text()
    assert "lower is better" in guide and "Label switching" in guide
    # Notebooks are rendered with their stored figures (PNG outputs), not re-executed.
    for stem in ["01_quickstart", "02_choosing_k", "03_foot_sizes", "04_iris"]:
        page = out / "examples" / f"{stem}.html"
        assert page.exists(), stem
        assert "<img" in page.read_text(), f"{stem} shows no figure"

    # Readable offline: the formulas are MathML written at build time, and no page loads
    # a script or a style sheet from the network (MathJax from a CDN showed raw TeX).
    assert guide.count("<math") >= 15
    assert "\\sum" not in guide and "\\pi_k" not in guide
    for page in out.rglob("*.html"):
        text = page.read_text()
        remote = re.findall(r'<(?:script|link)[^>]+(?:src|href)="(?:https?:)?//[^"]+"', text)
        assert not remote, (page.name, remote[:3])
    # The PyData theme, with the wide-content style sheet.
    assert "pydata-sphinx-theme" in guide and "_static/wide.css" in guide


def test_calibration_page_quotes_the_tracked_result():
    """docs/calibration.md states what benchmarks/results/calibration/summary.csv holds."""
    import importlib.util

    import pandas as pd

    root = DOCS.parent
    spec = importlib.util.spec_from_file_location(
        "calibration", root / "benchmarks" / "calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = module
    spec.loader.exec_module(module)
    summary = pd.read_csv(
        root / "benchmarks" / "results" / "calibration" / "earlier" / "summary.csv"
    )
    page = (DOCS / "calibration.md").read_text()
    assert module.result_sentence(summary) in " ".join(page.split())
    follow = pd.read_csv(
        root / "benchmarks/results/calibration/earlier/followup_d2_K2_full_500_draws/summary.csv"
    )
    assert module.result_sentence(follow) in " ".join(page.split())
    new = pd.read_csv(
        root / "benchmarks/results/calibration/earlier/new_sampler_d2_K2_full_60_sims/summary.csv"
    )
    assert module.result_sentence(new) in " ".join(page.split())
    # The numbers the page's prose quotes about the failing case and its rerun.
    import numpy as np

    folder = root / "benchmarks/results/calibration/earlier"
    short = summary.set_index("case").loc["d=2 K=2 full"]
    long_table = pd.read_csv(folder / "followup_d2_K2_full_500_draws/calibration.csv")
    ranks = pd.read_csv(folder / "followup_d2_K2_full_500_draws/ranks.csv")
    mean0 = long_table.set_index("quantity").loc["mixture mean[0]"]
    top = np.histogram(
        ranks.loc[ranks["quantity"] == "mixture mean[0]", "rank"], bins=10, range=(0, 100)
    )[0][-1]
    text = " ".join(page.split())
    assert f"in {short['share_rhat_over_1.01']:.0%} of its fits" in text
    assert f"fell to {follow['share_rhat_over_1.01'].iloc[0]:.0%}" in text
    assert f"chi-square p = {mean0['chi2_p']:.2f}" in text
    assert f"holds {top} of 200 ranks" in text
    # The earlier run was a full one of its time: 200 simulations per case, every case
    # then defined (EII and EEI came later).
    assert summary["sims"].min() >= 200
    assert set(summary["case"]) <= {case.name for case in module.cases()}
