"""The model's log density and gradient (no sampling): numpy vs PyTensor vs the prior module."""

import numpy as np
import pytest

from bayes_gmm.model import (
    ModelStructure,
    _logp_and_grad_numpy,
    build_model,
    covariances_from_prec_chol,
    flatten,
    free_variables,
    logp_and_grad,
    model_data,
    params_from_draws,
    to_unconstrained,
    unflatten,
)
from bayes_gmm.priors import GaussianMixturePrior

CASES = [
    (d, ctype, ordered)
    for d in (1, 3)
    for ctype in ("full", "tied", "diag", "spherical")
    for ordered in (False, True)
]


def _setup(d, ctype, ordered, K=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(40, d)) * 2 + 5
    w = rng.uniform(0.5, 2.0, 40)
    structure = ModelStructure(K, d, ctype, ordered)
    prior = GaussianMixturePrior(weight_concentration=1.7).resolve(X, K, ctype)
    data = model_data(X, w, prior)
    n_free = sum(int(np.prod(s)) for _, s in free_variables(structure))
    return rng, X, w, structure, prior, data, n_free


@pytest.mark.parametrize(("d", "ctype", "ordered"), CASES)
def test_gradient_matches_finite_differences(d, ctype, ordered):
    rng, _, _, structure, _, data, n_free = _setup(d, ctype, ordered)
    theta = rng.normal(size=n_free) * 0.3
    _, grad = logp_and_grad(structure, theta, data)
    h = 1e-6
    fd = np.array(
        [
            (
                logp_and_grad(structure, theta + h * e, data)[0]
                - logp_and_grad(structure, theta - h * e, data)[0]
            )
            / (2 * h)
            for e in np.eye(n_free)
        ]
    )
    # Central differences with h = 1e-6 on values of order 1e2: ~1e-7 relative noise.
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(grad).max()))


@pytest.mark.parametrize(("d", "ctype", "ordered"), CASES)
def test_numpy_density_equals_pymc_model(d, ctype, ordered):
    """The closed-form density and gradient equal PyTensor's autodiff of the PyMC model."""
    import pymc as pm
    from pytensor.compile.mode import Mode

    rng, _, _, structure, _, data, n_free = _setup(d, ctype, ordered)
    model = build_model(structure)
    with model:
        pm.set_data(data)
    mode = Mode(linker="py", optimizer="fast_compile")  # no C/numba compile in tests
    logp_fn, dlogp_fn = model.compile_logp(mode=mode), model.compile_dlogp(mode=mode)
    for _ in range(2):
        theta = rng.normal(size=n_free) * 0.3
        point = unflatten(structure, theta)
        value, grad = logp_and_grad(structure, theta, data)
        np.testing.assert_allclose(value, logp_fn(point), rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(grad, dlogp_fn(point), rtol=1e-10, atol=1e-9)


def _log_jacobian(structure, values):
    """log |d(weights, means, covariances) / d theta| computed independently of model.py."""
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    eta = np.append(values.get("weights_logratio", []), 0.0)
    w = np.exp(eta - np.logaddexp.reduce(eta))
    out = np.sum(np.log(w)) if K > 1 else 0.0  # additive log-ratio onto the simplex
    if structure.ordered:
        out += np.sum(values["means_first"][1:])
    if ctype in ("full", "tied"):
        z = np.atleast_2d(values["prec_chol_logdiag"])
        power = d - np.arange(d) + 1  # U -> U U^T (Muirhead 2.1.9) and the log of U_ii
        out += np.sum(z * power) + z.shape[0] * d * np.log(2.0)
        # precision -> covariance: |d Sigma / d P| = |P|^-(d+1)
        out -= (d + 1) * np.sum(2.0 * z)
    else:
        t = values["log_precision"]
        out += np.sum(t)  # log tau -> tau
        out -= np.sum(2.0 * t)  # tau -> 1 / tau
    return out


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("d", [1, 2])
def test_density_is_the_em_prior_times_likelihood(ctype, d):
    """logp(theta) = log prior (priors.py) + weighted log-likelihood + log Jacobian + const."""
    from scipy.stats import multivariate_normal

    rng, X, w, structure, prior, data, n_free = _setup(d, ctype, False)
    diffs = []
    for _ in range(3):
        theta = rng.normal(size=n_free) * 0.3
        values = unflatten(structure, theta)
        weights, means, U = params_from_draws(structure, values)
        cov = covariances_from_prec_chol(U, ctype)
        covs = covariances_from_prec_chol(U, "full")
        dens = sum(
            weights[k] * multivariate_normal(means[k], covs[k]).pdf(X).reshape(-1) for k in range(3)
        )
        expected = prior.log_density(weights, means, cov) + w @ np.log(dens)
        expected += _log_jacobian(structure, values)
        diffs.append(logp_and_grad(structure, theta, data)[0] - expected)
    # The difference is one constant (normalizing terms dropped by the model).
    np.testing.assert_allclose(diffs, diffs[0], atol=1e-8)


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
@pytest.mark.parametrize("ordered", [False, True])
def test_unconstrained_round_trip(ctype, ordered):
    rng = np.random.default_rng(1)
    K, d = 3, 2
    structure = ModelStructure(K, d, ctype, ordered)
    weights = np.array([0.2, 0.5, 0.3])
    means = np.sort(rng.normal(size=(K, d)), axis=0)
    A = rng.normal(size=(K, d, d))
    full = A @ np.swapaxes(A, 1, 2) + np.eye(d)
    cov = {
        "full": full,
        "tied": full[0],
        "diag": np.diagonal(full, axis1=1, axis2=2).copy(),
        "spherical": full[:, 0, 0].copy(),
    }[ctype]
    values = to_unconstrained(structure, weights, means, cov)
    theta = flatten(structure, values)
    w2, m2, U = params_from_draws(structure, unflatten(structure, theta))
    np.testing.assert_allclose(w2, weights, rtol=1e-12)
    np.testing.assert_allclose(m2, means, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(covariances_from_prec_chol(U, ctype), cov, rtol=1e-10)


@pytest.mark.parametrize(("d", "ctype", "ordered"), CASES)
def test_numba_kernel_equals_numpy_reference(d, ctype, ordered):
    rng, _, _, structure, _, data, n_free = _setup(d, ctype, ordered, K=4)
    for _ in range(3):
        theta = rng.normal(size=n_free) * 0.5
        value, grad = logp_and_grad(structure, theta, data)
        ref_value, ref_grad = _logp_and_grad_numpy(structure, theta, data)
        np.testing.assert_allclose(value, ref_value, rtol=1e-12)
        np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-9)


def test_single_component():
    rng, _, _, structure, _, data, n_free = _setup(2, "full", False, K=1)
    theta = rng.normal(size=n_free) * 0.3
    value, grad = logp_and_grad(structure, theta, data)
    ref_value, ref_grad = _logp_and_grad_numpy(structure, theta, data)
    np.testing.assert_allclose([value, *grad], [ref_value, *ref_grad], rtol=1e-10)


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_integer_weights_equal_repeated_rows(ctype):
    rng, X, _, structure, _, _, n_free = _setup(2, ctype, False)
    counts = rng.integers(0, 4, size=len(X))
    prior = GaussianMixturePrior().resolve(X, 3, ctype)
    theta = rng.normal(size=n_free) * 0.3
    weighted = logp_and_grad(structure, theta, model_data(X, counts, prior))
    Xr = np.repeat(X, counts, axis=0)
    repeated = logp_and_grad(structure, theta, model_data(Xr, np.ones(len(Xr)), prior))
    np.testing.assert_allclose(weighted[0], repeated[0], rtol=1e-12)
    np.testing.assert_allclose(weighted[1], repeated[1], rtol=1e-10, atol=1e-10)
