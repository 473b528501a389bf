"""The JAX route NUTS takes: the log density it differentiates is the model's, with the
data-only parts computed once per run."""

import warnings

import numpy as np
import pytensor.tensor as pt
import pytest

from bayes_gmm import GaussianMixture
from bayes_gmm.model import build_model, mixture_log_density
from bayes_gmm.sampling import _data_inputs, _jax_functions, _setup_jax


def _data(seed=0, n=80, d=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (2, d)) + 50.0  # far from the origin: the centring matters
    return np.concatenate([rng.normal(c, 1.0, (n // 2, d)) for c in centres])


@pytest.mark.parametrize("ctype", ["full", "diag", "EII"])
def test_jax_log_density_is_the_model_log_density(ctype, prior_point):
    """prepare (once per run) then logp (per gradient) gives PyMC's own log density, and
    the rows' features (one column per row) are among what prepare computes."""
    _setup_jax()
    X = _data()
    w = np.random.default_rng(1).uniform(0.5, 2.0, len(X))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(X, 2, ctype, sample_weight=w)
    prepare, logp, _, _ = _jax_functions(model)
    data = [np.asarray(v.get_value()) for v in _data_inputs(model)]
    prepared = prepare(*data)
    d = X.shape[1]
    shapes = [np.shape(p) for p in prepared]
    assert (d * (d + 1) // 2 + d, len(X)) in shapes, shapes
    for seed in range(3):
        _, point = prior_point(model, seed)
        values = [point[v.name] for v in model.value_vars]
        expected = model.compile_logp(mode="FAST_COMPILE")(point)
        # Prior draws can make the likelihood and the prior large and of opposite sign:
        # the tolerance is relative to the size of the terms, not of their sum.
        size = sum(
            abs(float(t))
            for t in model.compile_logp(sum=False, mode="FAST_COMPILE")(point)
            for t in np.ravel(t)
        )
        got = float(logp(*values, *prepared)[0])
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12 * size)


def test_density_without_a_static_feature_count():
    """On data of unknown width (no static shape) the density uses all d^2 products and
    gives the same values as GaussianMixture."""
    X = _data(seed=3, d=2)
    em = GaussianMixture(2, covariance_type="full", random_state=0).fit(X)
    value = pt.matrix("x")
    args = [
        pt.as_tensor(em.weights_),
        pt.as_tensor(em.means_),
        pt.as_tensor(em.precisions_cholesky_),
        pt.ones(value.shape[0]),
    ]
    dens = mixture_log_density(value, *args).eval({value: X})
    np.testing.assert_allclose(dens, em.score_samples(X), rtol=1e-10)
