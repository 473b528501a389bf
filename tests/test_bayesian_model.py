"""The PyMC model: its prior is the EM engine's prior, its likelihood the EM engine's
likelihood, and PyMC's own tools (prior / posterior predictive, graph, pointwise
log-likelihood) work on it."""

import warnings

import numpy as np
import pymc as pm
import pytest

from bayes_gmm import GaussianMixture, GaussianMixturePrior
from bayes_gmm.mixture_density import component_log_density
from bayes_gmm.model import POSTERIOR_FORMS, build_model

CTYPES = list(POSTERIOR_FORMS)
# Python implementations: nothing to compile for these one-off evaluations.
MODE = "FAST_COMPILE"


def _data(seed=0, n=60, d=2):
    rng = np.random.default_rng(seed)
    centres = np.array([[-3.0, 0.0, 1.0], [3.0, 1.0, -1.0]])[:, :d]
    return np.concatenate([rng.normal(c, 1.0, (n // 2, d)) for c in centres])


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical"])
def test_prior_density_is_the_em_prior(ctype, prior_point):
    """log p_model(variables) = log p_EM-prior(weights, means, covariances) + log|Jacobian|.

    The model writes the conjugate prior in other variables (Bartlett factors, Gamma
    precisions), so its density differs from ``ResolvedPrior.log_density`` by the log
    Jacobian of the map from those variables to the covariances, computed here by
    central differences (error ~1e-8 relative).
    """
    X = _data(d=2)
    K = 2
    resolved = GaussianMixturePrior(weight_concentration=1.5).resolve(X, K, ctype)
    model = build_model(X, K, ctype, resolved)
    structure = [rv.name for rv in model.free_RVs if rv.name not in ("weights", "means")]
    logp = model.compile_logp(vars=model.free_RVs, jacobian=False, mode=MODE)
    cov_fn = model.compile_fn(
        model["covariances"], inputs=[model[n] for n in structure], point_fn=False, mode=MODE
    )
    for seed in range(3):
        point, values = prior_point(model, seed)
        flat = np.concatenate([point[n].ravel() for n in structure])

        def covariances(v, point=point):
            parts, pos = [], 0
            for n in structure:
                size = point[n].size
                parts.append(v[pos : pos + size].reshape(point[n].shape))
                pos += size
            return np.asarray(cov_fn(*parts))

        cov = covariances(flat)
        unique = _unique_entries if ctype in ("full", "tied") else np.ravel
        h = 1e-6
        jac = np.empty((unique(cov).size, flat.size))
        for j in range(flat.size):
            e = np.zeros_like(flat)
            e[j] = h * max(1.0, abs(flat[j]))
            jac[:, j] = (unique(covariances(flat + e)) - unique(covariances(flat - e))) / (2 * e[j])
        log_jac = np.linalg.slogdet(jac)[1]
        model_logp = logp(values)
        expected = resolved.log_density(point["weights"], point["means"], cov) + log_jac
        np.testing.assert_allclose(model_logp, expected, rtol=1e-6)


@pytest.mark.parametrize("ctype", ["EII", "EEI"])
def test_shared_precision_priors(ctype, prior_point):
    """EII / EEI: one Gamma precision (per coordinate for EEI) shared by the components,
    means normal given it; checked against scipy's densities."""
    from scipy import stats

    X = _data(seed=5, d=2)
    resolved = GaussianMixturePrior().resolve(X, 2, ctype)
    model = build_model(X, 2, ctype, resolved)
    point, values = prior_point(model, 0)
    logp = model.compile_logp(vars=model.free_RVs, jacobian=False, mode=MODE)(values)
    scale = np.diagonal(resolved.scale)
    rate = scale / 2 if ctype == "EEI" else np.mean(scale) / 2
    tau = point["precisions"]
    nu, kappa = resolved.degrees_of_freedom, resolved.mean_precision
    expected = np.sum(stats.gamma.logpdf(tau, nu / 2, scale=1 / rate))
    expected += np.sum(stats.norm.logpdf(point["means"], resolved.mean, 1 / np.sqrt(kappa * tau)))
    expected += stats.dirichlet.logpdf(point["weights"], np.ones(2))
    np.testing.assert_allclose(logp, expected, rtol=1e-10)


def _unique_entries(cov):
    rows, cols = np.tril_indices(cov.shape[-1])
    return cov[..., rows, cols].ravel()


@pytest.mark.parametrize("ctype", CTYPES)
def test_likelihood_is_the_em_likelihood(ctype):
    """The observed variable's log density is GaussianMixture's weighted log-likelihood, and
    the numpy twin used for predictions agrees with it."""
    X = _data(seed=1, d=3)
    w = np.random.default_rng(0).integers(1, 4, size=len(X)).astype(float)
    em = GaussianMixture(2, covariance_type=ctype, random_state=0).fit(X, sample_weight=w)
    model = build_model(X, 2, ctype, sample_weight=w)
    (U_of_values,) = model.replace_rvs_by_values([model["precisions_cholesky"]])
    prec_chol = model.compile_fn(
        U_of_values, inputs=model.value_vars, on_unused_input="ignore", mode=MODE
    )
    start = {"weights": em.weights_, "means": em.means_}
    start.update(
        POSTERIOR_FORMS[ctype].start_values(
            em.covariances_, {k: v.get_value() for k, v in _named_data(model).items()}
        )
    )
    for name, value in start.items():
        model.set_initval(model[name], value)
    point = model.initial_point()
    loglik = model.compile_logp(vars=model.observed_RVs, mode=MODE)(point)
    expected = float(np.sum(w * em.score_samples(X)))
    np.testing.assert_allclose(loglik, expected, rtol=1e-10)
    U = prec_chol(point)
    dens = component_log_density(X, em.weights_[None], em.means_[None], np.asarray(U)[None])
    np.testing.assert_allclose(
        np.logaddexp.reduce(dens[0], axis=1), em.score_samples(X), rtol=1e-10
    )


def _named_data(model):
    return {v.name: v for v in model.data_vars}


def test_integer_weights_equal_repeated_rows(prior_point):
    X = _data(seed=2)
    counts = np.random.default_rng(1).integers(1, 4, size=len(X))
    prior = GaussianMixturePrior().resolve(X, 2, "full")
    weighted = build_model(X, 2, "full", prior, sample_weight=counts)
    repeated = build_model(np.repeat(X, counts, axis=0), 2, "full", prior)
    _, values = prior_point(weighted, 3)
    a = weighted.compile_logp(mode=MODE)(values)
    b = repeated.compile_logp(mode=MODE)(values)
    np.testing.assert_allclose(a, b, rtol=1e-12)


def test_prior_predictive_spread_matches_the_prior():
    """Covariance draws average to the inverse-Wishart mean Lambda / (nu - d - 1); data drawn
    from the prior predictive have the spread the prior implies."""
    X = _data(seed=3)
    prior = GaussianMixturePrior(degrees_of_freedom=8.0).resolve(X, 2, "full")
    model = build_model(X, 2, "full", prior)
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        draws = pm.sample_prior_predictive(draws=1500, random_seed=0)
    cov = draws["prior"]["covariances"].values.reshape(-1, 2, 2)
    expected = prior.scale / (prior.degrees_of_freedom - 2 - 1)
    # IW(8, Lambda): sd of a diagonal entry 0.82 x its mean; 3000 draws: se 1.5% of the mean.
    np.testing.assert_allclose(cov.mean(axis=0), expected, rtol=0.06, atol=0.06 * expected[0, 0])
    Xrep = draws["prior_predictive"]["X"].values
    assert Xrep.shape == (1, 1500, len(X), 2)
    # Given the parameters, a row has covariance Sigma + spread of the means (kappa small:
    # the means' prior sd is ~10 x the covariance scale): the replicate spread is far wider
    # than one component's and centred on the prior mean.
    np.testing.assert_allclose(np.median(Xrep, axis=(0, 1, 2)), prior.mean, atol=0.5)


@pytest.mark.parametrize("ctype", CTYPES)
def test_model_graph_and_names(ctype):
    X = _data(seed=4)
    model = build_model(X, 2, ctype, feature_names=["a", "b"])
    graph = pm.model_to_graphviz(model)
    assert "Dirichlet" in graph.source and "X" in graph.source
    assert list(model.coords["feature"]) == ["a", "b"]
    assert model.named_vars_to_dims["means"] == ("component", "feature")
    assert model.named_vars_to_dims["weights"] == ("component",)
    assert [rv.name for rv in model.observed_RVs] == ["X"]


def test_unsupported_structure_is_refused():
    with pytest.raises(ValueError, match="The posterior supports covariance_type"):
        build_model(_data(), 2, "VEV")
