"""scikit-learn's own GaussianMixture tests, run against bayes_gmm.GaussianMixture.

The tests are loaded from the installed scikit-learn, not copied: each of its mixture test
modules is executed afresh with ``sklearn.mixture.GaussianMixture`` replaced by ours while
it imports, so every test that builds a ``GaussianMixture`` builds ours. They run twice:
as ``test_sklearn_*`` with our default conventions, and as ``test_sklearn_conventions_*``
with ``conventions="sklearn"``. float64 runs by default; float32 and scikit-learn's sweep
over all 100 random seeds run under ``-m slow``.

Tests that reach into scikit-learn's private names cannot run against another class:
``PRIVATE`` lists each with the reason, and a test below checks the same fact through our
public API. ``DELIBERATE`` lists the tests of a behaviour our defaults change on purpose
(README, "Conventions"); they run with ``conventions="sklearn"`` and a test below pins our
default.
"""

from __future__ import annotations

import functools
import importlib.util
import types
import warnings
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import sklearn.mixture
from scipy import stats
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from bayes_gmm import GaussianMixture
from bayes_gmm.em import DegenerateFitWarning

SKLEARN_TESTS = Path(sklearn.mixture.__file__).parent / "tests"
TYPES = ["full", "tied", "diag", "spherical"]

PRIVATE = {
    "test_suffstat_sk_full": (
        "tests sklearn's private _estimate_gaussian_covariances_full; "
        "see test_m_step_covariances_are_the_weighted_scatter"
    ),
    "test_suffstat_sk_tied": (
        "tests sklearn's private _estimate_gaussian_covariances_tied; "
        "see test_m_step_covariances_are_the_weighted_scatter"
    ),
    "test_suffstat_sk_diag": (
        "tests sklearn's private _estimate_gaussian_covariances_diag; "
        "see test_m_step_covariances_are_the_weighted_scatter"
    ),
    "test_gaussian_suffstat_sk_spherical": (
        "tests sklearn's private _estimate_gaussian_covariances_spherical; "
        "see test_m_step_covariances_are_the_weighted_scatter"
    ),
    "test_compute_log_det_cholesky": (
        "tests sklearn's private _compute_log_det_cholesky; "
        "see test_log_densities_are_gaussian_log_densities"
    ),
    "test_gaussian_mixture_log_probabilities": (
        "tests sklearn's private _estimate_log_gaussian_prob; "
        "see test_log_densities_are_gaussian_log_densities"
    ),
    "test_gaussian_mixture_n_parameters": (
        "calls the private method _n_parameters; see test_n_parameters_public"
    ),
    "test_gaussian_mixture_aic_bic": (
        "calls the private method _n_parameters; see test_aic_bic_near_the_gaussian_entropy"
    ),
    "test_gaussian_mixture_precisions_init": (
        "calls the private methods _set_parameters and _initialize; "
        "see test_precisions_init_is_the_start"
    ),
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters": (
        "counts calls of sklearn's private _estimate_gaussian_parameters with a mock; "
        "see test_all_inits_given_are_the_start"
    ),
    "test_gaussian_mixture_array_api_compliance": (
        "array API inputs (torch, cupy, array_api_strict): bayes_gmm computes with numpy "
        "(scikit-learn skips them too without SCIPY_ARRAY_API and those libraries)"
    ),
    "test_gaussian_mixture_raises_where_array_api_not_implemented": (
        "array API inputs: bayes_gmm computes with numpy"
    ),
}

DELIBERATE = {
    "test_regularisation": (
        "expects ValueError when a covariance collapses with reg_covar=0; by default ours "
        "repairs it and warns (all four types); see test_collapse_without_reg_covar_warns"
    ),
}


def _with_conventions(conventions):
    """Our class, still named GaussianMixture, with ``conventions`` as its default."""
    init = GaussianMixture.__init__
    new_init = types.FunctionType(
        init.__code__, init.__globals__, init.__name__, init.__defaults__, init.__closure__
    )
    new_init.__kwdefaults__ = {**init.__kwdefaults__, "conventions": conventions}
    return type("GaussianMixture", (GaussianMixture,), {"__init__": new_init})


def _load(name, cls):
    """Execute scikit-learn's test module ``name`` with ``cls`` as its GaussianMixture."""
    spec = importlib.util.spec_from_file_location(
        f"_sklearn_conformance_{cls().conventions}_{name}", SKLEARN_TESTS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    with mock.patch.object(sklearn.mixture, "GaussianMixture", cls):
        spec.loader.exec_module(module)
    assert module.GaussianMixture is cls
    return module


def _only_ours(test):
    """``test`` parametrized over estimator instances, keeping only our class's cases."""

    @functools.wraps(test)
    def wrapper(*args, **kwargs):
        return test(*args, **kwargs)

    marks = []
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize" and mark.args[0] == "estimator":
            ours = [e for e in mark.args[1] if isinstance(e, GaussianMixture)]
            mark = pytest.mark.parametrize("estimator", ours).mark
        marks.append(mark)
    wrapper.pytestmark = marks
    return wrapper


def _collect(cls, prefix, skip):
    tests = {}
    for name in ("test_gaussian_mixture", "test_mixture"):
        for attr, value in vars(_load(name, cls)).items():
            if attr.startswith("test_") and callable(value) and attr not in skip:
                tests[f"{prefix}{attr.removeprefix('test_')}"] = _only_ours(value)
    return tests


globals().update(_collect(GaussianMixture, "test_sklearn_", {**PRIVATE, **DELIBERATE}))
globals().update(_collect(_with_conventions("sklearn"), "test_sklearn_conventions_", PRIVATE))


@pytest.fixture(params=[np.float64, pytest.param(np.float32, marks=pytest.mark.slow)])
def global_dtype(request):
    """scikit-learn's fixture: float64, and float32 under -m slow."""
    return request.param


def pytest_generate_tests(metafunc):
    """scikit-learn's global_random_seed: 42, and all of 0..99 under -m slow."""
    if "global_random_seed" in metafunc.fixturenames:
        seeds = [42] + [pytest.param(s, marks=pytest.mark.slow) for s in range(100) if s != 42]
        metafunc.parametrize("global_random_seed", seeds)


def test_every_listed_test_exists_and_the_rest_run():
    """The lists name tests scikit-learn has, and every other test of it is collected here."""
    names = set()
    for name in ("test_gaussian_mixture", "test_mixture"):
        names |= {a for a in vars(_load(name, GaussianMixture)) if a.startswith("test_")}
    assert set(PRIVATE) | set(DELIBERATE) <= names
    for attr in names - set(PRIVATE):
        assert f"test_sklearn_conventions_{attr.removeprefix('test_')}" in globals()
        if attr not in DELIBERATE:
            assert f"test_sklearn_{attr.removeprefix('test_')}" in globals()


# ----------------------------------------------------------------------------- replacements
def _blobs(seed=0, n=300, d=3):
    rng = np.random.RandomState(seed)
    centers = np.array([[-5.0] + [0.0] * (d - 1), [0.0] * d, [5.0] + [1.0] * (d - 1)])
    X = np.vstack([c + rng.randn(n // 3, d) @ (np.eye(d) + 0.3 * rng.randn(d, d)) for c in centers])
    return X, centers


def _start(X, centers, ctype):
    """An explicit start: equal weights, the given means, precisions of the data's spread."""
    K = centers.shape[0]
    v = X.var(axis=0)
    precisions = {
        "full": np.repeat(np.diag(1.0 / v)[None], K, axis=0),
        "tied": np.diag(1.0 / v),
        "diag": np.tile(1.0 / v, (K, 1)),
        "spherical": np.full(K, 1.0 / v.mean()),
    }[ctype]
    return {
        "weights_init": np.full(K, 1.0 / K),
        "means_init": centers,
        "precisions_init": precisions,
    }


@pytest.mark.parametrize("ctype", TYPES)
def test_m_step_covariances_are_the_weighted_scatter(ctype):
    # Same fact as sklearn's test_suffstat_sk_*: one EM step from a start gives each
    # component the responsibility-weighted scatter of the data about its new mean (tied:
    # sum_k N_k S_k / N; diag: its diagonal; spherical: its mean variance), plus reg_covar.
    X, centers = _blobs()
    start = dict(_start(X, centers, ctype), covariance_type=ctype, conventions="sklearn")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        resp = GaussianMixture(3, max_iter=0, **start).fit(X).predict_proba(X)
        one = GaussianMixture(3, max_iter=1, reg_covar=1e-6, **start).fit(X)
    nk = resp.sum(axis=0)
    means = resp.T @ X / nk[:, None]
    scatter = np.stack([(resp[:, k, None] * (X - means[k])).T @ (X - means[k]) for k in range(3)])
    full = scatter / nk[:, None, None]
    expected = {
        "full": full + 1e-6 * np.eye(3),
        "tied": scatter.sum(axis=0) / len(X) + 1e-6 * np.eye(3),
        "diag": np.diagonal(full, axis1=1, axis2=2) + 1e-6,
        "spherical": np.diagonal(full, axis1=1, axis2=2).mean(axis=1) + 1e-6,
    }[ctype]
    np.testing.assert_allclose(one.weights_, nk / len(X), rtol=1e-12)
    np.testing.assert_allclose(one.means_, means, rtol=1e-10)
    np.testing.assert_allclose(one.covariances_, expected, rtol=1e-10)
    # ... and the precisions are their inverses, through the Cholesky factors.
    pc = one.precisions_cholesky_
    if ctype in ("full", "tied"):
        np.testing.assert_allclose(pc @ np.swapaxes(pc, -1, -2), one.precisions_, rtol=1e-10)
        np.testing.assert_allclose(np.linalg.inv(one.covariances_), one.precisions_, rtol=1e-8)
    else:
        np.testing.assert_allclose(pc**2, one.precisions_, rtol=1e-12)
        np.testing.assert_allclose(1.0 / one.covariances_, one.precisions_, rtol=1e-12)


@pytest.mark.parametrize("ctype", TYPES)
def test_log_densities_are_gaussian_log_densities(ctype):
    # Same fact as sklearn's test_compute_log_det_cholesky and
    # test_gaussian_mixture_log_probabilities: the log-density (with its log-determinant)
    # is the mixture of scipy's multivariate normal densities.
    X, centers = _blobs(seed=1)
    start = _start(X, centers, ctype)
    rng = np.random.RandomState(2)
    if ctype == "full":
        start["precisions_init"] = np.stack([np.linalg.inv(c) for c in _spd(rng, 3, 3)])
    elif ctype == "tied":
        start["precisions_init"] = np.linalg.inv(_spd(rng, 1, 3)[0])
    start["weights_init"] = np.array([0.2, 0.5, 0.3])
    gm = GaussianMixture(3, covariance_type=ctype, max_iter=0, conventions="sklearn", **start)
    gm.fit(X)
    covs = {
        "full": lambda c: c,
        "tied": lambda c: [c] * 3,
        "diag": lambda c: [np.diag(v) for v in c],
        "spherical": lambda c: [v * np.eye(3) for v in c],
    }[ctype](gm.covariances_)
    dens = [
        np.log(w) + stats.multivariate_normal(m, c).logpdf(X)
        for w, m, c in zip(gm.weights_, gm.means_, covs, strict=True)
    ]
    expected = np.logaddexp.reduce(np.stack(dens), axis=0)
    np.testing.assert_allclose(gm.score_samples(X), expected, rtol=1e-10)
    np.testing.assert_allclose(gm.predict_proba(X), np.exp(np.stack(dens).T - expected[:, None]))


def _spd(rng, K, d):
    A = rng.randn(K, d, d)
    return A @ np.swapaxes(A, 1, 2) + d * np.eye(d)


def test_n_parameters_public():
    # Same fact as sklearn's test_gaussian_mixture_n_parameters, through n_parameters().
    X = np.random.RandomState(0).randn(50, 5)
    expected = {"spherical": 13, "diag": 21, "tied": 26, "full": 41}
    for ctype, n in expected.items():
        gm = GaussianMixture(2, covariance_type=ctype, random_state=0).fit(X)
        sk = SkGaussianMixture(2, covariance_type=ctype, random_state=0).fit(X)
        assert gm.n_parameters() == sk._n_parameters() == n


def test_aic_bic_near_the_gaussian_entropy():
    # Same fact as sklearn's test_gaussian_mixture_aic_bic: on one Gaussian, AIC and BIC of a
    # K=2 fit are close to 2 n H + their penalty (H the Gaussian entropy of the data).
    rng = np.random.RandomState(0)
    n, d = 50, 3
    X = rng.randn(n, d)
    entropy = 0.5 * (np.linalg.slogdet(np.cov(X.T, bias=True))[1] + d * (1 + np.log(2 * np.pi)))
    for ctype in TYPES:
        gm = GaussianMixture(2, covariance_type=ctype, random_state=0, max_iter=200).fit(X)
        p = gm.n_parameters()
        bound = d / np.sqrt(n)
        assert abs(gm.aic(X) - (2 * n * entropy + 2 * p)) / n < bound
        assert abs(gm.bic(X) - (2 * n * entropy + np.log(n) * p)) / n < bound


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_precisions_init_is_the_start(ctype, dtype):
    # Same fact as sklearn's test_gaussian_mixture_precisions_init (gh-26415): the given
    # precisions are the starting ones, exactly, with their Cholesky factors, in X's dtype.
    X, centers = _blobs(seed=3)
    X = X.astype(dtype)
    start = _start(X, centers, ctype)
    if ctype == "full":
        start["precisions_init"] = np.stack(
            [np.linalg.inv(c) for c in _spd(np.random.RandomState(4), 3, 3)]
        )
    gm = GaussianMixture(3, covariance_type=ctype, max_iter=0, conventions="sklearn", **start)
    gm.fit(X)
    assert gm.precisions_.dtype == gm.precisions_cholesky_.dtype == dtype
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(gm.precisions_, start["precisions_init"], rtol=rtol)
    pc = gm.precisions_cholesky_
    product = pc @ np.swapaxes(pc, -1, -2) if ctype in ("full", "tied") else pc**2
    np.testing.assert_allclose(product, start["precisions_init"], rtol=rtol)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_all_inits_given_are_the_start(seed):
    # Same fact as sklearn's test_gaussian_mixture_all_init_does_not_estimate_gaussian_
    # parameters (gh-26015): with weights, means and precisions given, nothing is estimated
    # before the first M-step, so max_iter=0 returns them, and each M-step equals sklearn's.
    X, centers = _blobs(seed=seed)
    start = _start(X, centers + np.random.RandomState(seed).randn(3, 3), "full")
    gm = GaussianMixture(3, max_iter=0, conventions="sklearn", **start).fit(X)
    np.testing.assert_array_equal(gm.weights_, start["weights_init"])
    np.testing.assert_allclose(gm.means_, start["means_init"], rtol=1e-14)  # centering
    np.testing.assert_allclose(gm.precisions_, start["precisions_init"], rtol=1e-12)
    for max_iter in (1, 5):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours = GaussianMixture(3, max_iter=max_iter, conventions="sklearn", **start).fit(X)
            theirs = SkGaussianMixture(3, max_iter=max_iter, **start).fit(X)
        assert ours.n_iter_ == theirs.n_iter_ == max_iter
        np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-10)


def test_collapse_without_reg_covar_warns():
    # Our default for what test_regularisation expects to raise: on data with only two
    # distinct rows, every covariance type warns (saying what to do) and stays usable.
    X = np.vstack((np.ones((5, 5)), np.zeros((5, 5))))
    for ctype in TYPES:
        gm = GaussianMixture(10, reg_covar=0, covariance_type=ctype, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # KMeans: 2 distinct points
            with pytest.warns(DegenerateFitWarning, match="collapsed.*consider fewer components"):
                gm.fit(X)
        assert np.isfinite(gm.log_likelihood_) and np.all(np.isfinite(gm.covariances_))
        assert np.array_equal(gm.predict(X[[0, 5]]) != gm.predict(X[[5, 0]]), [True, True])
        strict = GaussianMixture(10, reg_covar=0, covariance_type=ctype, random_state=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            with pytest.raises(ValueError, match="ill-defined empirical covariance"):
                strict.set_params(conventions="sklearn").fit(X)
