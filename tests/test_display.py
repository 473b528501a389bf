"""How results are shown: summary rows and rounding, the diagnostics report as text/HTML."""

import re

import numpy as np
import pandas as pd
import xarray as xr

from bayes_gmm._display import format_summary, is_mirrored_entry, posterior_summary, round_by_sd
from bayes_gmm.diagnostics import DiagnosticsReport

# --------------------------------------------------------------------------- summary


def _posterior(seed=0, chains=2, draws=300, K=2, features=("len (cm)", "width, mm")):
    rng = np.random.default_rng(seed)
    d = len(features)
    A = rng.normal(size=(chains, draws, K, d, d))
    cov = np.einsum("...ij,...kj->...ik", A, A) + np.eye(d)
    w = rng.dirichlet(np.ones(K), size=(chains, draws))
    coords = {"component": np.arange(K), "feature": list(features), "feature_": list(features)}
    return xr.Dataset(
        {
            "weights": (("chain", "draw", "component"), w),
            "means": (
                ("chain", "draw", "component", "feature"),
                rng.normal(size=(chains, draws, K, d)),
            ),
            "covariances": (("chain", "draw", "component", "feature", "feature_"), cov),
            "tied": (("chain", "draw", "feature", "feature_"), cov[:, :, 0]),
        },
        coords=coords,
    )


def test_summary_lists_each_covariance_entry_once():
    import arviz as az

    post = _posterior(K=3, features=("a", "b", "c"))
    raw = az.summary(post, ci_prob=0.9, round_to="none")
    table = posterior_summary(post, ci_prob=0.9, round_to="none")
    assert len(raw) == 3 + 9 + 27 + 9
    assert len(table) == 3 + 9 + 3 * 6 + 6  # upper triangles: d (d + 1) / 2 = 6
    assert "covariances[1, a, c]" in table.index and "covariances[1, c, a]" not in table.index
    assert "tied[b, b]" in table.index and "tied[c, b]" not in table.index
    # What is kept is ArviZ's row, untouched.
    pd.testing.assert_frame_equal(table, raw.loc[table.index])


def test_summary_row_labels_survive_commas_and_spaces_in_feature_names():
    table = posterior_summary(_posterior(), round_to="none")
    cov_rows = [name for name in table.index if name.startswith("covariances")]
    assert cov_rows == [
        "covariances[0, len (cm), len (cm)]",
        "covariances[0, len (cm), width, mm]",
        "covariances[0, width, mm, width, mm]",
        "covariances[1, len (cm), len (cm)]",
        "covariances[1, len (cm), width, mm]",
        "covariances[1, width, mm, width, mm]",
    ]


def test_round_by_sd_keeps_the_digits_the_sd_warrants():
    raw = pd.DataFrame(
        {
            "mean": [2.038234, 54.5312, 0.3321],
            "sd": [0.029412, 0.8512, 0.00004567],
            "eti94_lb": [1.983123, 52.9312, 0.33201234],
            "eti94_ub": [2.094478, 56.0712, 0.33219876],
            "ess_bulk": [1234.7, 88.2, 401.99],
            "r_hat": [1.01372, 1.0004, 1.0101],
            "mcse_mean": [0.00081234, 0.0912, 1.234e-6],
        },
        index=["means[0, eruptions]", "means[0, waiting]", "weights[0]"],
    )
    out = round_by_sd(raw)
    # The row: the interval was shown as "2 2.1"; the sd's two figures give 3 decimals.
    assert out.loc["means[0, eruptions]", ["mean", "sd", "eti94_lb", "eti94_ub"]].tolist() == [
        2.038,
        0.029,
        1.983,
        2.094,
    ]
    assert out.loc["means[0, waiting]", ["mean", "sd", "eti94_lb", "eti94_ub"]].tolist() == [
        54.53,
        0.85,
        52.93,
        56.07,
    ]
    assert out.loc["weights[0]", "eti94_lb"] == 0.332012
    assert out["ess_bulk"].tolist() == [1234, 88, 401]
    assert out["r_hat"].tolist() == [1.014, 1.0, 1.01]  # 1.0101 fails 1.01: three decimals
    assert out["mcse_mean"].tolist() == [0.00081, 0.091, 1.2e-6]
    # Rounding never moves a number by more than half its last shown digit.
    for col in ("mean", "eti94_lb", "eti94_ub"):
        assert np.all(
            np.abs(out[col] - raw[col]) <= 0.5 * 10.0 ** -(1 - np.floor(np.log10(raw["sd"])))
        )


def test_format_summary_prints_no_padding_zeros():
    table = pd.DataFrame({"mean": [47.0, 0.054, 1234567.0], "ess_bulk": [12, 3, 4]})
    text = format_summary(table).to_string()
    assert "47.000" not in text and "0.054" in text and "1234567" in text and "e+" not in text


def test_bayesian_summary_uses_it(monkeypatch):
    from bayes_gmm import bayesian

    src = open(bayesian.__file__).read()
    assert "posterior_summary(" in src  # one source of truth for the table


# --------------------------------------------------------------------------- diagnostics


def _report(**changes):
    fields = dict(
        max_rhat=1.0241,
        min_ess_bulk=85.3,
        min_ess_tail=120.0,
        worst_rhat=["means[0,1]", "covariances[0,1,0]", "covariances[0,0,1]"],
        worst_ess_bulk=["means[1,0]"],
        worst_ess_tail=[],
        n_divergent=0,
        bfmi=np.array([0.9, 0.8]),
        relabelled=np.array([0, 30]),
        n_draws=100,
    )
    fields.update(changes)
    return DiagnosticsReport(**fields)


def test_diagnostics_text_is_compact_with_the_verdict_whole_and_once():
    report = _report()
    text = str(report)
    assert repr(report) == text
    lines = text.splitlines()
    assert lines[0] == "Diagnostics of 2 chain(s) x 100 draws"
    table = lines[1:6]
    assert all(line.startswith("  ") and not line.startswith("   ") for line in table)  # left
    assert max(len(line) for line in table) < 80
    assert text.count(report.verdict) == 1 and text.count("Verdict") == 1
    assert lines[6] == f"Verdict: {report.verdict}"  # whole, on its own line
    assert report.verdict == (
        "not trustworthy: r_hat 1.024 > 1.01; ESS 85 < 400; 30% of a chain's draws relabelled"
    )
    # Then one line per failed check, saying what to do.
    assert lines[7:] == [f"- {p}" for p in report.problems()]
    assert len(report.problems()) == 3


def test_diagnostics_html_shows_the_whole_verdict():
    report = _report()
    import html as html_lib

    html = report._repr_html_()
    text = html_lib.unescape(html)
    assert f"Verdict: {report.verdict}" in text
    assert html.count("Verdict") == 1
    assert "text-align:left" in html
    for problem in report.problems():
        assert f"<li>{problem}</li>" in text


def test_diagnostics_ok_is_short():
    report = _report(
        max_rhat=1.003,
        min_ess_bulk=900.0,
        min_ess_tail=1000.0,
        worst_rhat=[],
        worst_ess_bulk=[],
        relabelled=np.array([0, 2]),
    )
    assert report.ok and report.verdict.startswith("ok")
    assert str(report).splitlines()[-1] == f"Verdict: {report.verdict}"
    assert "FAILED" not in str(report)
    frame = report.to_frame()
    assert list(frame.columns) == ["value", "requirement", "status"]
    assert frame["status"].tolist() == ["ok"] * 5


def test_warnings_name_each_covariance_entry_once():
    report = _report()
    rhat = report.problems()[0]
    assert "covariances[0,0,1]" in rhat and "covariances[0,1,0]" not in rhat
    assert is_mirrored_entry("covariances[2,1,0]") and not is_mirrored_entry("covariances[2,0,1]")
    assert not is_mirrored_entry("means[1,0]") and not is_mirrored_entry("covariances[1,1]")


def test_warnings_say_what_to_do_and_whether_relabelling_matters():
    rhat, ess, relabel = _report().problems()
    assert "rerun with more tune and draws" in rhat
    assert "increase draws" in ess
    assert "label-invariant" in relabel and "unaffected" in relabel
    assert "plot_trace_dist" in relabel  # how to tell whether it matters
    assert re.search(r"per chain: 0%, 30%", relabel)
