"""BayesianGaussianMixture(missing="em"): the likelihood integrates the missing values out.

The model's observed log density is GaussianMixture(missing="em")'s observed-data
log-likelihood, the same as the complete-data model on complete rows, and everything
downstream of the posterior (memberships, pointwise log-likelihood, loo, save/load,
posterior predictive) works on rows with NaN.
"""

import warnings

import numpy as np
import pymc as pm
import pytensor
import pytensor.tensor as pt
import pytest

from bayes_gmm import BayesianGaussianMixture, GaussianMixture
from bayes_gmm._missing import log_norm_and_resp, observed_log_likelihood
from bayes_gmm.datasets import make_mixture
from bayes_gmm.missing_density import (
    missing_blocks,
    missing_patterns,
    observed_component_log_density,
    observed_mixture_log_density,
)
from bayes_gmm.mixture_density import component_log_density, mixture_log_density
from bayes_gmm.model import POSTERIOR_FORMS, build_model

MODE = "FAST_COMPILE"  # one-off evaluations: nothing worth compiling


def _holes(X, fraction, seed):
    """``X`` with about ``fraction`` of its values NaN at random, no row left empty."""
    rng = np.random.default_rng(seed)
    out = X.copy()
    out[rng.random(X.shape) < fraction] = np.nan
    empty = np.isnan(out).all(axis=1)
    out[empty, 0] = X[empty, 0]
    return out


def _at_em_estimate(model, em):
    """The model's initial point moved to the EM estimate (constrained values)."""
    data = {v.name: v.get_value() for v in model.data_vars}
    start = {"weights": em.weights_, "means": em.means_}
    start.update(POSTERIOR_FORMS[em.covariance_type].start_values(em.covariances_, data))
    for name, value in start.items():
        model.set_initval(model[name], value)
    return model.initial_point()


@pytest.mark.parametrize("ctype", list(POSTERIOR_FORMS))
def test_observed_logp_is_the_em_observed_likelihood(ctype):
    X = _holes(make_mixture(120, 2, 3, random_state=4)[0], 0.25, seed=1)
    w = np.random.default_rng(0).integers(1, 4, size=len(X)).astype(float)
    em = GaussianMixture(2, covariance_type=ctype, missing="em", random_state=0)
    em.fit(X, sample_weight=w)
    model = build_model(X, 2, ctype, sample_weight=w)
    point = _at_em_estimate(model, em)
    loglik = model.compile_logp(vars=model.observed_RVs, sum=False, mode=MODE)(point)[0]
    expected = observed_log_likelihood(X, em.weights_, em.means_, em.covariances_, ctype)
    assert len(missing_patterns(X)[1]) == 7  # every pattern of 3 columns but the empty one
    np.testing.assert_allclose(loglik, w * expected, rtol=1e-10, atol=1e-10)
    # The numpy twin that predictions use agrees.
    (U,) = model.replace_rvs_by_values([model["precisions_cholesky"]])
    U = model.compile_fn(U, inputs=model.value_vars, on_unused_input="ignore", mode=MODE)(point)
    dens = observed_component_log_density(
        X, em.weights_[None], em.means_[None], np.asarray(U)[None]
    )
    np.testing.assert_allclose(np.logaddexp.reduce(dens[0], axis=1), expected, rtol=1e-10)


def test_complete_rows_give_the_complete_data_density():
    """On complete data the observed density is the complete-data one, and a complete row
    of incomplete data has the complete-data density."""
    rng = np.random.default_rng(2)
    K, d, n = 3, 3, 40
    weights = rng.dirichlet(np.ones(K))
    means = rng.normal(size=(K, d))
    prec_chol = np.tril(rng.normal(size=(K, d, d)) * 0.3) + 2.0 * np.eye(d)
    X = rng.normal(size=(n, d))
    sw = rng.uniform(0.5, 2.0, n)
    value, order = pt.matrix("value"), pt.lvector("order")
    args = (pt.vector("w"), pt.matrix("m"), pt.tensor3("U"), pt.vector("sw"))

    def observed(data):
        patterns = missing_patterns(data)
        out = observed_mixture_log_density(value, *args, order, patterns=patterns[1])
        f = pytensor.function([value, *args, order], out, mode=MODE)
        return f(data, weights, means, prec_chol, sw, patterns[0])

    complete = pytensor.function([value, *args], mixture_log_density(value, *args), mode=MODE)
    expected = complete(X, weights, means, prec_chol, sw)
    np.testing.assert_allclose(observed(X), expected, rtol=1e-12)
    holes = _holes(X, 0.3, seed=5)
    kept = ~np.isnan(holes).any(axis=1)
    np.testing.assert_allclose(observed(holes)[kept], expected[kept], rtol=1e-12)
    # Complete data builds the complete-data model (no row order to carry).
    assert "pattern_order" not in build_model(X, 2, "full").named_vars
    assert "pattern_order" in build_model(holes, 2, "full").named_vars


def test_nan_is_refused_by_default_and_names_the_option():
    X = _holes(make_mixture(60, 2, 2, random_state=0)[0], 0.2, seed=0)
    with pytest.raises(ValueError, match='missing="em"'):
        BayesianGaussianMixture(2).fit(X)
    X[3] = np.nan
    with pytest.raises(ValueError, match="every value missing"):
        BayesianGaussianMixture(2, missing="em").fit(X)
    with pytest.raises(ValueError, match="missing must be one of"):
        BayesianGaussianMixture(2, missing="drop").fit(X)


# --------------------------------------------------------------------------- fitted

SHORT = {"draws": 300, "tune": 300, "chains": 2, "random_state": 0}


def _fit(X, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: the diagnostics may complain
        return BayesianGaussianMixture(2, covariance_type="full", **SHORT, **kwargs).fit(X)


@pytest.fixture(scope="module")
def data():
    X = make_mixture(400, 2, 2, separation=5.0, random_state=3)[0]
    return X, _holes(X, 0.2, seed=7)


@pytest.fixture(scope="module")
def fitted(data):
    return _fit(data[1], missing="em")


def test_posterior_with_missing_values_recovers_the_complete_data_posterior(data, fitted):
    complete = _fit(data[0])
    for name in ("weights", "means", "covariances"):
        a = fitted.idata_["posterior"][name]
        b = complete.idata_["posterior"][name]
        sd = b.std(("chain", "draw"))
        shift = np.abs(a.mean(("chain", "draw")) - b.mean(("chain", "draw")))
        # 20% of the values missing: the posterior moves by less than its width ...
        assert float((shift / sd).max()) < 1.0, name
        if name != "weights":  # the classes stay clear from one coordinate: as sure
            # ... and widens (less information), on average over the parameters.
            assert float((a.std(("chain", "draw")) / sd).mean()) > 1.05, name


def test_memberships_of_rows_with_nan_average_the_exact_per_draw_ones(data, fitted):
    X = data[1]
    weights, means, covs = fitted.posterior_parameters(full=True)
    every = slice(None, None, 50)
    resp = [
        log_norm_and_resp(X, w, m, c, "full")[1]
        for w, m, c in zip(weights[every], means[every], covs[every], strict=True)
    ]
    draws = fitted._posterior_draws
    thinned = type(draws)(draws.weights[every], draws.means[every], draws.prec_chol[every])
    np.testing.assert_allclose(thinned.predict_proba(X), np.mean(resp, axis=0), atol=1e-10)
    proba = fitted.predict_proba(X)
    assert proba.shape == (len(X), 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.isfinite(fitted.score_samples(X)).all()
    interval = fitted.membership(X[:5])
    assert (interval["lower"] <= interval["upper"]).all()


def test_pointwise_log_likelihood_is_pymcs_and_loo_runs(fitted):
    stored = np.asarray(fitted.idata_["log_likelihood"]["X"])
    pymc_ll = pm.compute_log_likelihood(
        fitted.idata_.copy(), model=fitted.model_, extend_inferencedata=False, progressbar=False
    )
    np.testing.assert_allclose(stored, np.asarray(pymc_ll["X"]), rtol=1e-9)
    assert np.isfinite(float(fitted.loo().elpd))


def test_save_load_keeps_the_nan_and_the_model(tmp_path, data, fitted):
    X = data[1]
    loaded = BayesianGaussianMixture.load(fitted.save(tmp_path / "fit.zarr"))
    assert loaded.missing == "em"
    observed = np.asarray(loaded.idata_["observed_data"]["X"])
    np.testing.assert_array_equal(np.isnan(observed), np.isnan(X))
    np.testing.assert_allclose(loaded.predict_proba(X), fitted.predict_proba(X), rtol=1e-12)
    point = {k: v for k, v in fitted.model_.initial_point().items()}
    a = fitted.model_.compile_logp(mode=MODE)(point)
    b = loaded.model_.compile_logp(mode=MODE)(point)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    assert "pattern_order" in loaded.model_.named_vars


def test_posterior_predictive_draws_complete_rows(data, fitted):
    ds = fitted.sample_posterior_predictive(n_draws=5, random_state=1)
    replicated = np.asarray(ds["X"])
    assert replicated.shape == (2, 5, *data[1].shape)
    assert np.isfinite(replicated).all()
    # The replicated data spread like the observed entries of the data.
    observed = data[1]
    np.testing.assert_allclose(
        np.nanmean(observed, axis=0), replicated.mean(axis=(0, 1, 2)), atol=0.5
    )


def test_complete_numpy_twin_is_unchanged_without_nan():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(10, 2))
    w, m = rng.dirichlet(np.ones(3), 4), rng.normal(size=(4, 3, 2))
    U = np.broadcast_to(np.eye(2), (4, 3, 2, 2))
    np.testing.assert_array_equal(
        observed_component_log_density(X, w, m, U), component_log_density(X, w, m, U)
    )


# --------------------------------------------------------------------------- many patterns


def _many_patterns(n=400, d=6, fraction=0.3, seed=0):
    """Mixture parameters and data with dozens of missingness patterns, some rare."""
    rng = np.random.default_rng(seed)
    K = 3
    weights = rng.dirichlet(np.ones(K) * 3)
    means = rng.normal(size=(K, d))
    prec_chol = np.tril(rng.normal(size=(K, d, d)) * 0.3) + 1.5 * np.eye(d)
    X = _holes(rng.normal(size=(n, d)) * 2.0, fraction, seed)
    return X, rng.uniform(0.5, 2.0, n), weights, means, prec_chol


def _grouped_function(X, min_rows):
    """The observed density and its gradient (weights, means, factors), rows in blocks."""
    d = X.shape[1]
    value, order, cols = pt.tensor("v", shape=(None, d)), pt.lvector("o"), pt.lmatrix("c")
    args = (pt.vector("w"), pt.matrix("m"), pt.tensor3("U"), pt.vector("sw"))
    order_v, cols_v, blocks = missing_blocks(X, min_rows)
    out = observed_mixture_log_density(value, *args, order, cols, patterns=blocks)
    grads = pytensor.grad(out.sum(), list(args[:3]))
    f = pytensor.function([value, *args, order, cols], [out, *grads], mode=MODE)
    return lambda *params: f(X, *params, order_v, cols_v), blocks


def test_rows_of_rare_patterns_grouped_give_the_per_pattern_density(monkeypatch):
    from bayes_gmm import missing_density

    X, sw, weights, means, prec_chol = _many_patterns()
    n_patterns = len(missing_patterns(X)[1])
    assert n_patterns >= 40

    def per_pattern(w, m, U):  # the numpy twin: one marginal factor per pattern
        dens = observed_component_log_density(X, w[None], m[None], U[None])[0]
        return sw * np.logaddexp.reduce(dens, axis=1)

    expected = per_pattern(weights, means, prec_chol)
    rng = np.random.default_rng(3)
    params = (weights, means, prec_chol)
    directions = [rng.normal(size=p.shape) for p in params]
    directions[2] = np.tril(directions[2])
    results = []
    # 15 rows: frequent patterns keep their branch, the rest grouped; then every pattern
    # grouped (both sides: covariance blocks where m <= d - m, precision blocks beyond),
    # blocks factorized unrolled, then by batched Cholesky.
    for min_rows, unrolled in ((15, 4), (10**9, 4), (10**9, 0)):
        monkeypatch.setattr(missing_density, "UNROLLED_MAX", unrolled)
        f, blocks = _grouped_function(X, min_rows)
        assert any(isinstance(key, int) for key, _, _ in blocks)
        assert len(blocks) < n_patterns
        value, *grads = f(weights, means, prec_chol, sw)
        np.testing.assert_allclose(value, expected, rtol=1e-10, atol=1e-10)
        for i, (g, direction) in enumerate(zip(grads, directions, strict=True)):
            h = 1e-5
            shifted = [list(params), list(params)]
            shifted[0][i] = params[i] + h * direction
            shifted[1][i] = params[i] - h * direction
            fd = (per_pattern(*shifted[0]).sum() - per_pattern(*shifted[1]).sum()) / (2 * h)
            np.testing.assert_allclose(np.sum(g * direction), fd, rtol=1e-6)
        results.append(grads)
    # The two layouts' gradients agree (on the factors' lower triangles: the upper ones are
    # not parameters, and each form reads them differently).
    for a, b in zip(results[0], results[2], strict=True):
        mask = np.tril(np.ones(a.shape[-2:], dtype=bool)) if a.ndim == 3 else True
        np.testing.assert_allclose(np.where(mask, a, 0.0), np.where(mask, b, 0.0), rtol=1e-9)


def _graph_size(X):
    import pytensor.graph.traversal as traversal

    d = X.shape[1]
    args = (pt.vector("w"), pt.matrix("m"), pt.tensor3("U"), pt.vector("sw"))
    value, order, cols = pt.tensor("v", shape=(None, d)), pt.lvector("o"), pt.lmatrix("c")
    sizes = {}
    for name, patterns in (
        ("per_pattern", missing_patterns(X)[1]),
        ("blocks", missing_blocks(X)[2]),
    ):
        out = observed_mixture_log_density(value, *args, order, cols, patterns=patterns)
        inputs = [v for v in traversal.ancestors([out]) if v.owner is None]
        sizes[name] = len(traversal.io_toposort(inputs, [out]))
    return sizes


def test_many_patterns_make_a_bounded_graph():
    from bayes_gmm import missing_density

    rng = np.random.default_rng(0)
    d = 8
    sizes = []
    for n in (2000, 20000):
        X = _holes(rng.normal(size=(n, d)), 0.15, seed=n)
        order, columns, blocks = missing_blocks(X)
        assert len(blocks) <= 1 / missing_density.PATTERN_FRACTION + d - 1
        np.testing.assert_array_equal(np.sort(order), np.arange(n))
        observed = ~np.isnan(X)
        counts = observed.sum(axis=1)
        for key, start, stop in blocks:  # each row's observed columns come first
            rows = order[start:stop]
            if isinstance(key, int):
                assert (counts[rows] == key).all()
            else:
                assert (observed[rows] == np.array(key)).all()
            first = np.take_along_axis(observed[rows], columns[rows], axis=1)
            assert (first[:, : counts[rows].min()]).all()
        sizes.append(_graph_size(X))
    # Hundreds of patterns: one branch each before, a bounded number now.
    assert len(missing_patterns(X)[1]) > 150
    assert sizes[1]["per_pattern"] > 5 * sizes[1]["blocks"]
    assert sizes[1]["blocks"] < 2 * sizes[0]["blocks"]
    model = build_model(X[:3000], 2, "full")
    assert model["pattern_columns"].get_value().shape == (3000, d)


def test_fit_with_many_patterns_in_eight_dimensions():
    X = make_mixture(600, 2, 8, separation=6.0, random_state=5)[0]
    Xm = _holes(X, 0.15, seed=2)
    assert len(missing_patterns(Xm)[1]) > 60
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = BayesianGaussianMixture(
            2, covariance_type="full", missing="em", draws=150, tune=150, chains=2,
            random_state=0,
        ).fit(Xm)  # fmt: skip
    post = fit.idata_["posterior"]
    sd = post["means"].std(("chain", "draw"))
    chain_means = post["means"].mean("draw")
    # Both chains found the same mode, near the EM estimate with missing values.
    assert float((abs(chain_means[0] - chain_means[1]) / sd).max()) < 1.0
    em = np.asarray(fit.idata_["em_estimate"]["means"])
    assert float((abs(post["means"].mean(("chain", "draw")) - em) / sd).max()) < 1.0
    assert int(fit.idata_["sample_stats"]["diverging"].sum()) <= 3
    assert fit.predict_proba(Xm).shape == (600, 2)
