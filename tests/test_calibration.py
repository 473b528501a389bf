"""Simulation-based calibration, small: the slow marker runs it (a few minutes).

The tracked run (200 simulations per case over every case) is
``benchmarks/calibration.py``; its table and figures are in the docs (calibration page).
"""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "calibration.py"


def _load():
    spec = importlib.util.spec_from_file_location("calibration", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["calibration"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_prior_draws_match_the_prior():
    """The truths come from the model's prior: check the draws' moments against it."""
    cal = _load()
    rng = np.random.default_rng(0)
    case = cal.Case(2, 2, "diag")
    draws = [cal.draw_truth(rng, case) for _ in range(4000)]
    weights = np.array([w for w, _, _ in draws])
    variances = np.array([np.diagonal(c, axis1=1, axis2=2) for _, _, c in draws])
    p = cal.prior_settings(2)
    # Dirichlet(3, 3): mean 1/2; InvGamma(nu/2, lambda/2): mean lambda / (nu - 2).
    assert abs(weights.mean() - 0.5) < 0.01
    expected = 1.0 / (p["degrees_of_freedom"] - 2)
    assert abs(np.median(variances) / expected - 1) < 0.5  # heavy tail: median, loosely
    # The label-invariant quantities of a single parameter set are finite and ordered.
    w, m, c = draws[0]
    q = cal.quantities(w[None], m[None], c[None], cal.fixed_points(2))
    assert q["sorted weight 0"][0] <= q["sorted weight 1"][0]
    assert all(np.isfinite(v).all() for v in q.values())


def test_match_to_pivot_undoes_a_permutation():
    cal = _load()
    true_means = np.array([[0.0, 0.0], [5.0, 1.0], [-3.0, 4.0]])
    perm = cal.match_to_pivot(true_means, true_means[[2, 0, 1]] + 0.1, np.ones(2))
    np.testing.assert_array_equal(perm, [2, 0, 1])


def test_rank_tests_accept_uniform_and_reject_skewed_ranks():
    cal = _load()
    rng = np.random.default_rng(1)
    uniform = rng.integers(0, 100, size=200)
    skewed = np.minimum(rng.integers(0, 100, size=200), rng.integers(0, 100, size=200))
    assert min(cal.rank_tests(uniform, 99, rng)) > 0.01
    assert max(cal.rank_tests(skewed, 99, rng)) < 1e-4


@pytest.mark.slow
def test_small_sbc_is_calibrated_and_detects_the_wrong_prior(tmp_path):
    cal = _load()
    status = cal.main(["--small", "--jobs", "2", "--out", str(tmp_path)])
    import pandas as pd

    summary = pd.read_csv(tmp_path / "summary.csv")
    assert not summary.loc[~summary["control"], "calibrated"].eq(False).any(), summary
    assert not summary.loc[summary["control"], "calibrated"].any(), summary
    assert status == 0
    assert (tmp_path / "ranks.png").stat().st_size > 10_000
    assert (tmp_path / "ecdf.png").stat().st_size > 10_000
