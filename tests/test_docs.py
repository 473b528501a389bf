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
    """docs/calibration.md states what benchmarks/results/calibration/ holds."""
    import importlib.util

    import numpy as np
    import pandas as pd

    root = DOCS.parent
    spec = importlib.util.spec_from_file_location(
        "calibration", root / "benchmarks" / "calibration.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = module
    spec.loader.exec_module(module)
    folder = root / "benchmarks" / "results" / "calibration"
    text = " ".join((DOCS / "calibration.md").read_text().split())
    summary = pd.read_csv(folder / "summary.csv")
    follow = pd.read_csv(folder / "followup_d1_K3_full_500_draws" / "summary.csv")
    for table in (summary, follow, pd.read_csv(folder / "earlier" / "summary.csv")):
        assert module.result_sentence(table) in text
    # The tracked run is the full one: at least 200 simulations per case, every case,
    # and the page names the commit and the time its run.txt reports.
    assert summary["sims"].min() >= 200
    assert list(summary["case"]) == [case.name for case in module.cases()]
    run = (folder / "run.txt").read_text()
    commit = run.split("code tested: commit ")[1].split()[0]
    assert f"tested commit `{commit}`" in text and run.count("code tested:") == 1
    fits = run.split("fitting time over the case files: ")[1].split()
    assert f"took {fits[0]} s of wall time" in text and f"{fits[5].lstrip('(')} s per fit" in text
    # The current run (the Laplace metric) and the one before it, on the same 17 cases.
    for name in ("laplace_metric", "final_sampler"):
        later = folder / name
        later_summary = pd.read_csv(later / "summary.csv")
        assert module.result_sentence(later_summary) in text, name
        assert list(later_summary["case"]) == [case.name for case in module.cases()], name
        assert later_summary["sims"].min() >= 200, name
        later_run = (later / "run.txt").read_text()
        later_commit = later_run.split("code tested: commit ")[1].split()[0]
        assert f"at commit `{later_commit}`" in text and later_run.count("code tested:") == 1
        later_fits = later_run.split("fitting time over the case files: ")[1].split()
        seconds, per_fit = later_fits[0], later_fits[5][1:]
        assert f"Its 3400 fits took {seconds} s of wall time, {per_fit} s per fit" in text, name
    current = folder / "laplace_metric"
    current_fits = (current / "run.txt").read_text().split("over the case files: ")[1].split()
    assert f"{3400 / float(current_fits[0]):.1f} fits per second" in text
    # The load average (1 minute) sampled every minute while the run was fitting.
    load = [float(line.split()[1]) for line in (current / "load.txt").read_text().splitlines()]
    assert f"load average between {min(load):.1f} and {max(load):.1f}" in text
    current_table = pd.read_csv(current / "calibration.csv").set_index(["case", "quantity"])
    tied_ks = current_table.loc[("d=2 K=3 tied", "mixture mean[0]"), "ks_p"]
    assert f"p = {tied_ks:.2g} before the adjustment)" in text
    # Divergences: the Laplace metric's against the previous sampler's on the same data
    # sets, and the follow-ups with mass_matrix="adapt".

    def divergent(path, case):
        stored = pd.read_json(path / "cases" / f"{case.slug}.json", typ="series")
        return sum(stored["flags"]["divergent"])

    regular_cases = [case for case in module.cases() if not case.control]
    divergence = {}
    for name in ("laplace_metric", "final_sampler"):
        later_summary = pd.read_csv(folder / name / "summary.csv")
        share = later_summary.loc[~later_summary["control"], "share_divergent"]
        fits = sum(divergent(folder / name, case) for case in regular_cases)
        divergence[name] = (share.min(), share.max(), share.mean(), fits)
    (lo, hi, mean, fits), (old_lo, old_hi, old_mean, old_fits) = divergence.values()
    assert (
        f"in {lo:.1%} to {hi:.1%} of a case's fits (mean {mean:.1%} over the 16 cases), "
        f"against {old_lo:.1%} to {old_hi:.1%} (mean {old_mean:.1%})" in text
    )
    assert f"{fits} of the 3200 regular fits against {old_fits}." in text
    tied_1d = module.Case(1, 2, "tied")
    assert (
        f"(d=1 K=2 tied: {divergent(current, tied_1d)} of 200 fits against "
        f"{divergent(folder / 'final_sampler', tied_1d)})" in text
    )
    for case in (tied_1d, module.Case(2, 3, "full"), module.Case(2, 2, "full")):
        follow_up = current / f"followup_{case.slug}_adapt_metric"
        assert pd.read_csv(follow_up / "summary.csv")["calibrated"].all(), case.name
        assert "mass_matrix='adapt'" in (follow_up / "run.txt").read_text()
        assert (
            f"{case.name} in {divergent(follow_up, case)} of 200 "
            f"(Laplace: {divergent(current, case)})" in text
        )
    # The numbers the prose quotes about the failing cases and the rerun.
    table = pd.read_csv(folder / "calibration.csv").set_index(["case", "quantity"])
    long_table = pd.read_csv(folder / "followup_d1_K3_full_500_draws" / "calibration.csv")
    shares = summary.set_index("case")["share_rhat_over_1.01"]

    def deciles(path, case):
        ranks = pd.read_json(path / "cases" / f"{case}.json", typ="series")["ranks"]
        return np.histogram(ranks["label-invariant|mixture mean[0]"], bins=10, range=(0, 100))[0]

    short = table.loc[("d=1 K=3 full", "mixture mean[0]")]
    assert (
        f"(chi-square p = {short['chi2_p']:.2g} and Kolmogorov-Smirnov p = {short['ks_p']:.2g}"
        in text
    )
    assert f"holds {deciles(folder, 'd1_K3_full')[0]} of 200 ranks" in text
    assert f"in {shares['d=1 K=3 full']:.0%} of its fits" in text
    assert f"fell to {follow['share_rhat_over_1.01'].iloc[0]:.0%}" in text
    rerun = long_table.set_index("quantity").loc["mixture mean[0]"]
    assert (
        f"chi-square p = {rerun['chi2_p']:.2g} (Kolmogorov-Smirnov p = {rerun['ks_p']:.2g})" in text
    )
    low = deciles(folder / "followup_d1_K3_full_500_draws", "d1_K3_full")[0]
    assert f"lowest decile still holds {low} of 200 ranks" in text
    tied = table.loc[("d=2 K=3 tied", "weights[0]")]
    quoted = f"p = {tied['chi2_p']:.2g} before the adjustment, Kolmogorov-Smirnov p = "
    assert f"{quoted}{tied['ks_p']:.2g})" in text
    tied_follow = folder / "followup_d2_K3_tied_500_draws"
    tied_long = pd.read_csv(tied_follow / "summary.csv")
    assert module.result_sentence(tied_long) in text
    assert f"fell to {tied_long['share_rhat_over_1.01'].iloc[0]:.0%}. It passes" in text
    tied_commit = (tied_follow / "run.txt").read_text().split("code tested: commit ")[1].split()[0]
    assert f"at commit `{tied_commit}`" in text
    tied_mean_long = pd.read_csv(tied_follow / "calibration.csv").set_index("quantity")
    weakest = tied_mean_long.loc["mixture mean[0]", "ks_p"]
    assert f"weakest quantity (Kolmogorov-Smirnov p = {weakest:.2g}" in text
    tied_mean = table.loc[("d=2 K=3 tied", "mixture mean[0]")]
    assert f"(Kolmogorov-Smirnov p = {tied_mean['ks_p']:.2g} before the adjustment;" in text
    earlier = pd.read_csv(folder / "earlier" / "summary.csv").set_index("case")
    assert f"(adjusted p = {earlier.loc['d=2 K=3 tied', 'min_p_specific']:.2g})" in text
    regular = summary[~summary["control"]]
    low_share, high_share = regular["share_rhat_over_1.01"].agg(["min", "max"])
    assert f"in {low_share:.0%} to {high_share:.0%} of a case's fits" in text
