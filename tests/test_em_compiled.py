"""The compiled E-step of large fits (em._e_step_block_compiled) against the numpy one."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from bayes_gmm import GaussianMixture, em
from bayes_gmm import _gaussian as g


def blobs(n, d, K, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 4.0, size=(K, d))
    labels = rng.integers(K, size=n)
    mix = rng.normal(size=(K, d, d)) * 0.1 + np.eye(d)  # well conditioned
    return centers[labels] + np.einsum("nij,nj->ni", mix[labels], rng.standard_normal((n, d)))


def fit(X, ctype, compiled, weights=None, **params):
    """A 15-iteration fit (tol=0) with or without the compiled E-step."""
    gm = GaussianMixture(4, covariance_type=ctype, random_state=0, max_iter=15, tol=0, **params)
    limit = 0 if compiled else np.inf
    paths = []
    original = em._e_step_blocks

    def spy(ctx, eta, const, prec_chol, moments, compiled):
        paths.append(compiled)
        return original(ctx, eta, const, prec_chol, moments, compiled)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setattr(em, "COMPILED_E_STEP_MIN_ENTRIES", limit)
        mp.setattr(em, "_e_step_blocks", spy)
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = gm.fit(X, sample_weight=weights)
    # The E-step under test ran: otherwise a comparison would set numpy against numpy.
    assert any(paths) == compiled
    return fitted


def assert_same_fit(a, b):
    np.testing.assert_allclose(a.log_likelihood_, b.log_likelihood_, rtol=1e-12)
    np.testing.assert_allclose(a.weights_, b.weights_, rtol=1e-10)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("ctype", "d"), [("full", 3), ("full", 8), ("diag", 3), ("spherical", 3)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_compiled_e_step_equals_numpy(ctype, d, weighted, sparse, monkeypatch):
    """Stored features ("full" on 3 columns) and features computed chunk by chunk; moments
    from the responsibilities above the threshold (sparse) or from all of them."""
    monkeypatch.setattr(em, "SPARSE_MOMENTS_MIN_WIDTH", 0 if sparse else 10**6)
    X = blobs(3000, d, 4)
    weights = np.random.default_rng(1).random(len(X)) * 2 if weighted else None
    assert_same_fit(fit(X, ctype, True, weights), fit(X, ctype, False, weights))


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_compiled_e_step_two_threads(ctype, monkeypatch):
    X = blobs(6000, 3, 4, seed=2)
    monkeypatch.setattr(em, "SPARSE_MOMENTS_MIN_WIDTH", 0)
    monkeypatch.setattr(g, "CHUNK_ELEMENTS", 2048)  # many chunks: two worker blocks
    monkeypatch.setattr(g, "N_WORKERS", 2)
    assert_same_fit(fit(X, ctype, True), fit(X, ctype, False))


def test_left_out_responsibilities_fall_back(monkeypatch):
    """When what the compiled E-step leaves out is not negligible, it counts everything."""
    X = blobs(3000, 2, 4, seed=3)
    calls = []
    original = em._e_step_blocks

    def spy(ctx, eta, const, prec_chol, moments, compiled):
        calls.append(compiled)
        return original(ctx, eta, const, prec_chol, moments, compiled)

    monkeypatch.setattr(em, "_e_step_blocks", spy)
    monkeypatch.setattr(em, "SKIPPED_THRESHOLD", 0.5)  # leaves out most responsibilities
    monkeypatch.setattr(em, "SPARSE_MOMENTS_MIN_WIDTH", 0)
    compiled = fit(X, "full", True)
    assert calls.count(True) == 16 and calls.count(False) == 15  # every M-step's E-step
    assert_same_fit(compiled, fit(X, "full", False))


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_features_into_equals_features(ctype):
    from bayes_gmm import _em_kernel

    X = blobs(50, 5, 2)
    center = X.mean(axis=0)
    expected = g.features(X - center, ctype)
    out = np.empty_like(expected)
    _em_kernel.features_into(X, center, _em_kernel.CTYPE_CODES[ctype], out)
    np.testing.assert_allclose(out, expected, rtol=1e-14)
