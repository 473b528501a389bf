"""The sampler's start from the EM estimate: values, jitter scales, chains, metric.

Between the PyMC model (:mod:`bayes_gmm.model`) and NUTS (:mod:`bayes_gmm.sampling`):
the EM/MAP estimate written in the model's random variables, each chain's start on the
unconstrained scale (the estimate plus a jitter of about a posterior sd), and the metric
``mass_matrix="auto"`` resolves to.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm._gaussian import full_covariances
from bayes_gmm.model import model_data, posterior_form

__all__ = [
    "LAPLACE_MIN_COMPONENT_WEIGHT",
    "chain_starts",
    "choose_metric",
    "em_values",
    "start_scales",
]

#: mass_matrix="auto" takes the Laplace metric when every component of the EM estimate holds
#: at least this many rows. Above, it saves gradients where they cost most (the 5-D
#: benchmark case); below, sampling is cheap anyway, while the dense metric's Hessian and
#: adaptation lengthen the compile (the 2-D case's cold fit) and diverge more often on small
#: data (the SBC's 50 rows). The measurements: README, "How it samples", and
#: docs/calibration.md.
LAPLACE_MIN_COMPONENT_WEIGHT = 500


def em_values(em, model, resolved, X, w):
    """The EM estimate written in the model's random variables (constrained scale)."""
    form = posterior_form(em.covariance_type)
    values = {
        "weights": np.clip(em.weights_, 1e-12, None) / np.clip(em.weights_, 1e-12, None).sum(),
        "means": np.asarray(em.means_, dtype=float),
        **form.start_values(
            np.asarray(em.covariances_, dtype=float),
            model_data(X, w, resolved, em.covariance_type),
        ),
    }
    free = {rv.name for rv in model.free_RVs}
    return {name: value for name, value in values.items() if name in free}


def choose_metric(mass_matrix, weights, total_weight):
    """The sampler's metric for ``mass_matrix``, "auto" resolved from the EM weights."""
    if mass_matrix != "auto":
        return mass_matrix
    smallest = float(np.min(weights)) * float(total_weight)
    return "laplace" if smallest >= LAPLACE_MIN_COMPONENT_WEIGHT else "adapt"


def start_scales(model, em, values, total_weight):
    """Approximate posterior sds of the EM-started free values on the unconstrained
    scale, keyed by value-variable name (the start's jitter and the sampler's first mass
    matrix); variables a user added are left out."""
    K, d = em.means_.shape
    n_k = np.maximum(np.asarray(em.weights_) * total_weight, 1.0)
    inv_sqrt = 1.0 / np.sqrt(n_k)
    covs = full_covariances(em.covariances_, em.covariance_type, K, d)
    sd = np.sqrt(np.diagonal(covs, axis1=-2, axis2=-1))
    scales = {"weights": inv_sqrt[:-1], "means": sd * inv_sqrt[:, None]}
    scales.update(posterior_form(em.covariance_type).jitter_scale(values, n_k, total_weight))
    return {
        model.rvs_to_values[rv].name: np.asarray(scales[rv.name], dtype=float)
        for rv in model.free_RVs
        if rv.name in values and rv.name in scales
    }


def chain_starts(model, values, scale, chains, jitter, seed):
    """Each chain's start on the unconstrained scale: the EM estimate plus a uniform
    jitter of ``jitter`` times ``scale``, keyed by value-variable name."""
    from pymc.initial_point import make_initial_point_fn

    overrides = {model[name]: value for name, value in values.items()}
    point = make_initial_point_fn(
        model=model, overrides=overrides, jitter_rvs=set(), return_transformed=True
    )(seed)
    rng = np.random.default_rng(seed)
    starts = {}
    for value_var in model.value_vars:
        base = np.asarray(point[value_var.name], dtype=float)
        width = np.broadcast_to(scale.get(value_var.name, 0.0), base.shape)
        noise = rng.uniform(-1.0, 1.0, size=(chains, *base.shape))
        starts[value_var.name] = base[None] + jitter * width[None] * noise
    return starts
