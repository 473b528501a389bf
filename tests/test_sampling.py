"""The JAX route NUTS takes: the log density it differentiates is the model's, with the
data-only parts computed once per run."""

import warnings

import numpy as np
import pytensor.tensor as pt
import pytest

from bayes_gmm import GaussianMixture
from bayes_gmm.mixture_density import mixture_log_density
from bayes_gmm.model import build_model
from bayes_gmm.sampling import _data_inputs, _jax_functions, _setup_jax


def _data(seed=0, n=80, d=3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 3.0, (2, d)) + 50.0  # far from the origin: the centring matters
    return np.concatenate([rng.normal(c, 1.0, (n // 2, d)) for c in centres])


@pytest.mark.parametrize("ctype", ["full", "diag", "EII"])
def test_jax_log_density_is_the_model_log_density(ctype, prior_point):
    """prepare (once per run) then logp (per gradient) gives PyMC's own log density, and
    the centred rows, one column per row (what the fused pass reads), are among what
    prepare computes."""
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
    assert (d, len(X)) in shapes, shapes
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


def test_laplace_metric_is_the_inverse_hessian():
    """On a Gaussian potential the metric is its covariance, in numpyro's flattening order
    and whatever the batching of the Hessian's products; negative curvature is taken in
    absolute value, and a Hessian that is not finite falls back to the diagonal."""
    _setup_jax()
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    from bayes_gmm.sampling import _laplace_inverse_mass

    rng = np.random.default_rng(0)
    root = rng.normal(size=(3, 3))
    precision = root @ root.T + 0.5 * np.eye(3)
    centre = rng.normal(size=3)
    start = {"b": jnp.asarray(0.3), "a": jnp.asarray([1.0, -2.0])}  # flattened a, then b
    scale = {"b": jnp.asarray(2.0), "a": jnp.asarray([3.0, 4.0])}

    def potential(z, sign=1.0):
        r = ravel_pytree(z)[0] - centre
        return 0.5 * sign * r @ jnp.asarray(precision) @ r

    for batch in (1, 2, 3):
        got = np.asarray(_laplace_inverse_mass(potential, start, scale, batch))
        np.testing.assert_allclose(got, np.linalg.inv(precision), rtol=1e-10)
    concave = np.asarray(_laplace_inverse_mass(lambda z: potential(z, -1.0), start, scale, 3))
    np.testing.assert_allclose(concave, np.linalg.inv(precision), rtol=1e-10)
    broken = np.asarray(_laplace_inverse_mass(lambda z: potential(z) * jnp.nan, start, scale, 3))
    np.testing.assert_array_equal(broken, np.diag([9.0, 16.0, 4.0]))


def test_both_metrics_sample_a_correlated_posterior():
    """A strongly correlated Gaussian: both metrics recover its moments; the Laplace metric
    (the exact covariance here) needs fewer gradients than warm-up's diagonal."""
    import pymc as pm

    from bayes_gmm.sampling import sample_nuts

    cov = np.array([[1.0, 0.95 * 3.0], [0.95 * 3.0, 9.0]])
    with pm.Model() as model:
        pm.MvNormal("x", mu=np.array([1.0, -2.0]), cov=cov)
    start = {"x": np.array([[0.5, -1.0], [1.5, -3.0]])}
    gradients = {}
    for metric in ("laplace", "adapt"):
        posterior, stats, timings, log_likelihood = sample_nuts(
            model, start, draws=2000, tune=500, chains=2, random_seed=1, mass_matrix=metric
        )
        x = posterior["x"].reshape(-1, 2)
        assert log_likelihood == {}  # not asked for
        assert not stats["diverging"].any()
        # 4000 draws with ESS well above 1000: means within 4 Monte Carlo sds.
        np.testing.assert_allclose(x.mean(axis=0), [1.0, -2.0], atol=4 * 3.0 / np.sqrt(1000))
        np.testing.assert_allclose(np.cov(x.T), cov, rtol=0.15, atol=0.15)
        gradients[metric] = timings["gradients"]
    assert gradients["laplace"] < 0.6 * gradients["adapt"], gradients


def test_sample_nuts_refuses_an_unknown_metric():
    import pymc as pm

    from bayes_gmm.sampling import sample_nuts

    with pm.Model() as model:
        pm.Normal("x")
    with pytest.raises(ValueError, match="mass_matrix must be one of"):
        sample_nuts(model, {"x": np.zeros(2)}, chains=2, mass_matrix="dense")


def test_unknown_xla_options_fall_back_to_defaults(monkeypatch):
    """A jaxlib that does not know the sampler's XLA options compiles with its defaults."""
    import pymc as pm

    from bayes_gmm import sampling

    monkeypatch.setattr(sampling, "XLA_OPTIONS", {"xla_no_such_option_here": "1"})
    with pm.Model() as model:
        pm.Normal("y", mu=3.0, sigma=0.5, shape=3)
    posterior = sampling.sample_nuts(
        model, {"y": np.full((2, 3), 3.0)}, draws=300, tune=200, chains=2, random_seed=0
    ).posterior
    np.testing.assert_allclose(posterior["y"].mean(axis=(0, 1)), 3.0, atol=0.15)
