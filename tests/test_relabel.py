"""Label switching: the pivot relabelling, unit level and on chains moved to permuted modes."""

import itertools
import warnings

import numpy as np
import pytest
import xarray as xr

from bayes_gmm.bayesian import BayesianGaussianMixture
from bayes_gmm.diagnostics import SamplingWarning, compute_diagnostics
from bayes_gmm.relabel import (
    apply_permutations,
    kl_cost,
    pivot_permutations,
    relabel_posterior,
)


@pytest.mark.parametrize("K", [2, 3, 5, 8])
def test_pivot_recovers_known_permutations(K):
    rng = np.random.default_rng(K)
    S, d = 200, 2
    pivot_means = rng.normal(scale=5.0, size=(K, d))
    pivot_chol = np.broadcast_to(np.eye(d), (K, d, d))
    perms = np.array([rng.permutation(K) for _ in range(S)])
    # Draw s lists pivot component perms[s, j] at position j (plus a little noise).
    means = pivot_means[perms] + rng.normal(scale=0.05, size=(S, K, d))
    covs = np.broadcast_to(np.eye(d), (S, K, d, d))
    found = pivot_permutations(kl_cost(means, covs, pivot_means, pivot_chol))
    relabelled = apply_permutations(means, found, axis=1)
    np.testing.assert_allclose(relabelled, np.broadcast_to(pivot_means, means.shape), atol=0.5)
    # found[s, k] is the draw position holding pivot component k: the inverse permutation.
    np.testing.assert_array_equal(
        np.take_along_axis(perms, found, axis=1), np.tile(np.arange(K), (S, 1))
    )


def test_kl_cost_separates_shape_as_well_as_location():
    d = 2
    pivot_means = np.zeros((2, d))
    pivot_cov = np.stack([np.eye(d), 25.0 * np.eye(d)])  # same centre, different spread
    pivot_chol = np.linalg.cholesky(np.linalg.inv(pivot_cov))
    draw_cov = pivot_cov[[1, 0]][None]
    cost = kl_cost(np.zeros((1, 2, d)), draw_cov, pivot_means, pivot_chol)
    assert np.all(pivot_permutations(cost) == [1, 0])
    np.testing.assert_allclose(
        kl_cost(np.zeros((1, 2, d)), pivot_cov[None], pivot_means, pivot_chol)[0].diagonal(),
        0.0,
        atol=1e-12,
    )


def _blobs(seed=0, n=60):
    rng = np.random.default_rng(seed)
    centres = np.array([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]])
    return np.concatenate([rng.normal(c, 1.0, (n, 2)) for c in centres])


@pytest.fixture(scope="module")
def permuted_runs():
    """Four chains of one run, three of them then moved to other labellings of the mode
    (every component-indexed variable permuted alike), as label switching would."""
    X = _blobs()
    model = BayesianGaussianMixture(3, draws=500, tune=500, chains=4, random_state=0, relabel=None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        model.fit(X)
    post = model.idata_["posterior"]
    dims = {name: post[name].dims[2:] for name in post.data_vars}
    perms = [(0, 1, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    permuted = {}
    for name in post.data_vars:
        values = post[name].values.copy()
        if "component" in dims[name]:
            axis = 2 + dims[name].index("component")
            for c, p in enumerate(perms):
                values[c] = np.take(values[c], p, axis=axis - 1)
        permuted[name] = values
    return model, permuted, dims


def test_permuted_chains_are_relabelled_consistently(permuted_runs):
    model, permuted, dims = permuted_runs
    em = model.em_
    pivot = np.linalg.cholesky(np.linalg.inv(em.covariances_))
    relabelled, moved = relabel_posterior(permuted, dims, em.means_, pivot)
    # Three chains sat in a permuted labelling for all their draws, one in the pivot's.
    assert moved.tolist() == [0, 500, 500, 500]
    # Every variable is back where it was, the Bartlett factors and Deterministics too.
    for name, values in relabelled.items():
        np.testing.assert_array_equal(values, model.idata_["posterior"][name].values, name)
    ds = xr.Dataset({n: (("chain", "draw", *dims[n]), v) for n, v in relabelled.items()})
    stats = model.idata_["sample_stats"].to_dataset()
    report = compute_diagnostics(ds[["weights", "means", "covariances"]], stats, moved)
    assert report.max_rhat <= 1.01, report
    assert any("relabelled" in p for p in report.problems())


def test_without_relabelling_the_same_draws_have_not_converged(permuted_runs):
    model, permuted, dims = permuted_runs
    ds = xr.Dataset({n: (("chain", "draw", *dims[n]), v) for n, v in permuted.items()})
    stats = model.idata_["sample_stats"].to_dataset()
    report = compute_diagnostics(ds[["weights", "means", "covariances"]], stats, np.zeros(4, int))
    assert report.max_rhat > 1.5
    assert any("r_hat" in p for p in report.problems())


def test_ordered_constraint_orders_every_draw():
    rng = np.random.default_rng(4)
    X = np.concatenate([rng.normal(240, 7, 300), rng.normal(270, 6, 150)])[:, None]
    model = BayesianGaussianMixture(
        2, draws=200, tune=300, chains=2, random_state=0, relabel="ordered"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        model.fit(X)
    first = model.idata_["posterior"]["means"].values[..., 0]
    assert np.all(np.diff(first, axis=-1) > 0)
    # The intervals hold the groups' sample means (what the data can tell).
    group_means = [X[:300, 0].mean(), X[300:, 0].mean()]
    lo, hi = np.quantile(first.reshape(-1, 2), [0.03, 0.97], axis=0)
    assert np.all((lo < group_means) & (group_means < hi)), (lo, hi, group_means)


def test_all_permutations_of_small_k_are_considered():
    cost = np.zeros((1, 3, 3))
    for perm in itertools.permutations(range(3)):
        cost[:] = 1.0
        cost[0, list(perm), range(3)] = 0.0
        assert pivot_permutations(cost)[0].tolist() == list(perm)
