"""Label switching: the pivot relabelling, unit level and on chains started in permuted modes."""

import itertools
import warnings

import numpy as np
import pytest

from bayes_gmm.bayesian import BayesianGaussianMixture
from bayes_gmm.diagnostics import SamplingWarning
from bayes_gmm.relabel import apply_permutations, kl_cost, pivot_permutations


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
    """Four chains, each started in a different permutation of the EM mode."""
    X = _blobs()
    starts = [np.array(p) for p in [(0, 1, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]]
    out = {}
    for relabel in ("pivot", None):
        model = BayesianGaussianMixture(
            3, draws=1000, tune=500, chains=4, random_state=0, relabel=relabel
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            model._fit(X, None, chain_permutations=starts)
        out[relabel] = (model, [w for w in caught if issubclass(w.category, SamplingWarning)])
    return out


def test_permuted_chains_are_relabelled_consistently(permuted_runs):
    model, caught = permuted_runs["pivot"]
    report = model.diagnostics()
    assert report.max_rhat <= 1.01, report
    # Three chains sat in a permuted mode for all their draws, one in the pivot's.
    assert sorted(report.relabelled.tolist()) == [0, 1000, 1000, 1000]
    means = model.idata_["posterior"]["means"].mean("draw").values  # (chain, K, d)
    np.testing.assert_allclose(means, means[:1].repeat(4, axis=0), atol=0.5)
    # The warning names the label problem.
    assert any("relabelled" in str(w.message) for w in caught)


def test_without_relabelling_the_same_run_has_not_converged(permuted_runs):
    model, caught = permuted_runs[None]
    assert model.diagnostics().max_rhat > 1.5
    assert any("r_hat" in str(w.message) for w in caught)


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
