"""Simulation-based calibration, small: the slow marker runs it (a few minutes).

The tracked run (200 simulations per case over every case) is
``benchmarks/calibration.py``; its table and figures are in the docs (calibration page).
The fast tests check its parts: the truths follow the model's own prior for every
structure the posterior supports, finished cases are read back, the matching and the rank
tests work.
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


@pytest.mark.slow  # six PyMC models compiled for pm.draw: ~10-40 s each on a shared machine
@pytest.mark.parametrize("structure", ["full", "tied", "diag", "spherical", "EII", "EEI"])
def test_prior_draws_follow_the_models_own_prior(structure):
    """SBC's truths come from the distribution the sampled PyMC model calls its prior."""
    import pymc as pm
    from scipy import stats

    from bayes_gmm import GaussianMixturePrior
    from bayes_gmm.model import POSTERIOR_FORMS, build_model

    cal = _load()
    assert set(cal.STRUCTURES) == set(POSTERIOR_FORMS)
    rng = np.random.default_rng(2)
    truths = [cal.draw_truth(rng, cal.Case(2, 2, structure)) for _ in range(4000)]
    prior = GaussianMixturePrior(**cal.prior_settings(2))
    model = build_model(np.zeros((5, 2)), 2, structure, prior)
    weights, means, covs = pm.draw(
        [model["weights"], model["means"], model["covariances"]], draws=4000, random_seed=3
    )
    # Component 1's variance along feature 0, from the structure's storage layout.
    variance = {
        "full": lambda c: c[:, 1, 0, 0],
        "tied": lambda c: c[:, 0, 0],
        "diag": lambda c: c[:, 1, 0],
        "spherical": lambda c: c[:, 1],
    }.get(structure, lambda c: c[:, 1, 0, 0])(np.asarray(covs))
    pairs = {
        "weights[0]": ([w[0] for w, _, _ in truths], weights[:, 0]),
        "means[1,0]": ([m[1, 0] for _, m, _ in truths], means[:, 1, 0]),
        "variance[1,0]": ([c[1, 0, 0] for _, _, c in truths], variance),
    }
    for name, (ours, pymc) in pairs.items():
        # Three two-sample tests per structure, 18 in all: 1e-3 keeps chance failures rare.
        assert stats.ks_2samp(ours, pymc).pvalue > 1e-3, (structure, name)


def test_finished_cases_are_read_back_not_refitted(tmp_path):
    cal = _load()
    case = cal.Case(2, 2, "EII")
    settings = cal._settings(2, 50, 200, 250, 99)
    results = [
        (case, 1, {("label-invariant", "sorted weight 0"): 7}, {"rhat_over": True}),
        (case, 0, {("label-invariant", "sorted weight 0"): 3}, {"rhat_over": False}),
    ]
    path = tmp_path / "cases" / f"{case.slug}.json"
    cal._save_case(path, case, settings, results, 1.0, "abc1234")
    back, seconds = cal.run([case], 2, 50, 200, 250, 99, jobs=1, out=tmp_path, progress=False)
    assert seconds == 0.0
    assert back == sorted(results, key=lambda r: r[1])
    # Other settings: the stored case does not count.
    assert cal._load_case(path, case, cal._settings(3, 50, 200, 250, 99)) is None


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
