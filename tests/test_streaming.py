"""Streaming: ``GaussianMixture.partial_fit`` (online EM)."""

import warnings

import numpy as np
import pytest

from bayes_gmm import GaussianMixture, GaussianMixturePrior
from bayes_gmm.em import DegenerateFitWarning

TRUE_MEANS = np.array([[0.0, 0.0, 0.0], [1.0, 6.0, 5.0], [4.0, 4.0, 0.0]])  # sorted as means_


def _simulate(n, seed=0):
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(3, 3, 3)) * 0.6
    covs = np.array([f @ f.T + np.eye(3) for f in factors])
    labels = rng.choice(3, n, p=[0.3, 0.3, 0.4])
    X = np.empty((n, 3))
    for k in range(3):
        rows = labels == k
        X[rows] = rng.multivariate_normal(TRUE_MEANS[k], covs[k], size=rows.sum())
    return X


def _stream(gm, X, batch=1000):
    for start in range(0, len(X), batch):
        gm.partial_fit(X[start : start + batch])
    return gm


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_batches_of_1000_reach_the_full_batch_log_likelihood(ctype):
    X = _simulate(50_000)
    full = GaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    online = _stream(GaussianMixture(3, covariance_type=ctype, random_state=0), X)
    loglik = online.score_samples(X).sum()
    assert loglik <= full.log_likelihood_ + 1e-6 * abs(full.log_likelihood_)
    gap = (full.log_likelihood_ - loglik) / abs(full.log_likelihood_)
    assert gap < 0.005  # the goal
    assert gap < 3e-5  # the README's figure (0.003%)
    # one pass: 49 updates after the first batch's EM
    assert len(online.history_) == online.n_iter_ + 1
    if ctype == "full":  # the true model: the means are recovered
        se = 3 * np.sqrt(10.0 / (0.3 * len(X)))
        np.testing.assert_allclose(online.means_, TRUE_MEANS, atol=max(se, 0.05))
        np.testing.assert_allclose(online.means_, full.means_, atol=0.05)


def test_step_size_is_the_documented_one():
    X = _simulate(3000, seed=1)
    gm = GaussianMixture(3, random_state=0, learning_offset=1.0, learning_decay=1.0)
    gm.partial_fit(X[:1000])
    first = gm.score_samples(X[:1000]).mean()
    gm.partial_fit(X[1000:2000]).partial_fit(X[2000:])
    # rho_1 = 1/2, rho_2 = 1/3: the running statistics are the plain average of the batches
    running = (first + gm.history_[-2] + gm.history_[-1]) / 3
    np.testing.assert_allclose(gm.log_likelihood_, running * 3000, rtol=1e-12)
    gm.set_params(learning_decay=0.4)
    with pytest.raises(ValueError, match=r"learning_decay must lie in \(0.5, 1\]"):
        gm.partial_fit(X[:10])


def test_integer_weights_count_as_copies():
    X = _simulate(2000, seed=2)
    a = GaussianMixture(3, random_state=0).partial_fit(X[:1000])
    b = GaussianMixture(3, random_state=0).partial_fit(X[:1000])
    a.partial_fit(X[1000:1500], sample_weight=np.full(500, 2.0))
    b.partial_fit(np.vstack([X[1000:1500], X[1000:1500]]))
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-10)


def test_no_reinitialization_and_fixed_features():
    X = _simulate(3000, seed=3)
    gm = GaussianMixture(3, random_state=0).fit(X[:2000])
    means = gm.means_.copy()
    gm.partial_fit(X[2000:2500])  # starts the running statistics at the fitted parameters
    np.testing.assert_array_equal(gm.means_, means)
    gm.partial_fit(X[2500:])
    assert 0 < np.abs(gm.means_ - means).max() < 0.5
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.partial_fit(X[:100, :2])
    with pytest.raises(ValueError, match="0 sample"):
        gm.partial_fit(np.empty((0, 3)))


def test_a_batch_with_other_columns_is_refused():
    import pandas as pd

    X = pd.DataFrame(_simulate(2000, seed=6), columns=["a", "b", "c"])
    gm = GaussianMixture(3, random_state=0).partial_fit(X[:1000])
    with pytest.raises(ValueError, match="feature names should match"):
        gm.partial_fit(X[1000:].rename(columns={"c": "z"}))
    import dask.array as da

    with pytest.raises(TypeError, match="partial_fit takes in-memory batches"):
        gm.partial_fit(da.from_array(X.to_numpy()[1000:], chunks=500))


def test_prior_keeps_a_small_first_batch_from_collapsing():
    X = _simulate(20_000, seed=4)
    with pytest.warns(DegenerateFitWarning):
        GaussianMixture(3, random_state=0).partial_fit(X[:5])
    gm = GaussianMixture(3, random_state=0, prior=GaussianMixturePrior())
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        gm.partial_fit(X[:5])
    _stream(gm, X[5:])
    assert np.all(np.linalg.eigvalsh(gm.covariances_) > 0.1)
    np.testing.assert_allclose(gm.means_, TRUE_MEANS, atol=0.2)


def test_partial_fit_with_missing_values():
    X = _simulate(20_000, seed=5)
    rng = np.random.default_rng(0)
    Xm = np.where(rng.random(X.shape) < 0.2, np.nan, X)
    Xm = Xm[~np.isnan(Xm).all(axis=1)]
    gm = _stream(GaussianMixture(3, random_state=0, missing="em"), Xm)
    np.testing.assert_allclose(gm.means_, TRUE_MEANS, atol=0.15)
