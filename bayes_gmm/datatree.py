"""The fitted model's data tree (``BayesianGaussianMixture.idata_``): built from the
draws, read back, and its pointwise log-likelihood, whole or row chunk by row chunk (LOO).

Between the estimator (:mod:`bayes_gmm.bayesian`), which samples and then lays its results
out here, and the files (:mod:`bayes_gmm.storage`), which write and read the tree as it is.
The groups follow PyMC's layout for the model (``posterior``, ``sample_stats``,
``observed_data``, ``constant_data``, ``log_likelihood``), plus ``em_estimate``.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm.model import COMPONENT, FEATURE, posterior_form
from bayes_gmm.predictive import PosteriorDraws

__all__ = [
    "build_tree",
    "chunked_loo",
    "log_likelihood_dataset",
    "model_dataset",
    "observed_rows",
    "pointwise_dataset",
    "posterior_draws",
]


def model_dataset(values, model, sample_dims=("chain", "draw")):
    """An xarray Dataset of arrays shaped (*sample_dims, ...) with the model's dims and
    coords (``name_dim_i`` for what the model does not name)."""
    import xarray as xr

    coords = {name: np.asarray(c) for name, c in model.coords.items() if c is not None}
    variables = {}
    for name, array in values.items():
        array = np.asarray(array)
        var_dims = tuple(model.named_vars_to_dims.get(name) or ()) or tuple(
            f"{name}_dim_{i}" for i in range(array.ndim - len(sample_dims))
        )
        variables[name] = ((*sample_dims, *var_dims), array)
    used = set(sample_dims) | {d for var_dims, _ in variables.values() for d in var_dims}
    for i, dim in enumerate(sample_dims):
        coords[dim] = np.arange(next(iter(variables.values()))[1].shape[i])
    return xr.Dataset(variables, coords={k: v for k, v in coords.items() if k in used})


def build_tree(posterior, stats, model, em, config):
    """The fitted data tree, groups laid out as PyMC lays them out for this model."""
    import xarray as xr
    from pymc.backends.arviz import find_constants, find_observations

    coords = {name: np.asarray(c) for name, c in model.coords.items() if c is not None}
    observed = model_dataset(find_observations(model), model, sample_dims=())
    constant_ds = model_dataset(find_constants(model), model, sample_dims=())
    ctype = config["covariance_type"]
    em_ds = xr.Dataset(
        {
            "weights": ((COMPONENT,), np.asarray(em.weights_)),
            "means": ((COMPONENT, FEATURE), np.asarray(em.means_)),
            "covariances": (posterior_form(ctype).covariance_dims, np.asarray(em.covariances_)),
        },
        coords={k: coords[k] for k in (COMPONENT, FEATURE, "feature_")},
        attrs={"log_posterior": float(getattr(em, "log_likelihood_", np.nan))},
    )
    return xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "sample_stats": stats,
            "observed_data": observed,
            "constant_data": constant_ds,
            "em_estimate": em_ds,
        }
    )


def posterior_draws(tree):
    """The draws' mixture parameters, chains stacked, for predictions."""
    post = tree["posterior"]
    weights = np.asarray(post["weights"])
    C, S = weights.shape[:2]
    if weights.ndim != 3:
        raise ValueError(
            "This model's weights vary by row; predict with pymc.sample_posterior_predictive "
            "on model_ (pm.set_data for new rows) instead."
        )
    K = weights.shape[-1]
    means = np.asarray(post["means"]).reshape(C * S, K, -1)
    d = means.shape[-1]
    prec_chol = np.asarray(post["precisions_cholesky"]).reshape(C * S, K, d, d)
    return PosteriorDraws(weights.reshape(C * S, K), means, prec_chol)


def observed_rows(tree, name):
    """The observed rows and their sample weights (ones when the model has none)."""
    X = np.asarray(tree["observed_data"][name])
    constant = tree["constant_data"] if "constant_data" in tree.children else {}
    w = np.asarray(constant["sample_weight"]) if "sample_weight" in constant else None
    return X, np.ones(X.shape[0]) if w is None else w


def chunked_loo(draws, tree, X, w, name, chunk_rows, pointwise, kwargs):
    """PSIS-LOO row chunk by row chunk, the terms added up (see
    ``BayesianGaussianMixture.loo``)."""
    import arviz_stats as az
    import xarray as xr
    from arviz_stats.utils import ELPDDataLOO

    obs_dim = tree["observed_data"][name].dims[0]
    posterior = tree["posterior"].to_dataset()
    elpd_i, pareto_k, p_loo, warning, good_k = [], [], 0.0, False, None
    for start in range(0, X.shape[0], chunk_rows):
        rows = slice(start, start + chunk_rows)
        chunk = xr.DataTree.from_dict(
            {
                "posterior": posterior,
                "log_likelihood": log_likelihood_dataset(draws, tree, X[rows], w[rows], name),
            }
        )
        part = az.loo(chunk, var_name=name, pointwise=True, **kwargs)
        elpd_i.append(np.asarray(part.elpd_i))
        pareto_k.append(np.asarray(part.pareto_k))
        p_loo += float(part.p)
        warning = warning or bool(part.warning)
        good_k = part.good_k
    elpd_i, pareto_k = np.concatenate(elpd_i), np.concatenate(pareto_k)
    n = elpd_i.size
    coords = {obs_dim: np.asarray(tree["observed_data"][name][obs_dim])}
    return ELPDDataLOO(
        elpd=float(elpd_i.sum()),
        se=float(np.sqrt(n * np.var(elpd_i, ddof=1))) if n > 1 else 0.0,
        p=p_loo,
        n_samples=draws.n_draws,
        n_data_points=n,
        scale="log",
        warning=warning,
        good_k=good_k,
        elpd_i=xr.DataArray(elpd_i, dims=(obs_dim,), coords=coords) if pointwise else None,
        pareto_k=xr.DataArray(pareto_k, dims=(obs_dim,), coords=coords) if pointwise else None,
    )


def log_likelihood_dataset(draws, tree, X, w, name):
    """Pointwise log-likelihood of the observed rows, as the model defines it (weighted)."""
    post = tree["posterior"]
    C, S = post.sizes["chain"], post.sizes["draw"]
    ll = draws.pointwise_log_likelihood(X) * w[None, :]
    return pointwise_dataset({name: ll.reshape(C, S, X.shape[0])}, tree)


def pointwise_dataset(values, tree):
    """Pointwise values of the observed variables, shaped (chain, draw, ...), as a Dataset
    with the observed data's leading dimensions."""
    import xarray as xr

    variables = {}
    for name, array in values.items():
        array = np.asarray(array)
        dims = tree["observed_data"][name].dims[: array.ndim - 2]
        variables[name] = (("chain", "draw", *dims), array)
    return xr.Dataset(variables)
