"""The observed mixture's log density of complete rows, labels summed out.

Part of the PyMC model, below it (mixture_density -> missing_density ->
:mod:`bayes_gmm.model`; none imports a later one): the log density of the model's
observed variable ``X`` when no value is missing (:func:`mixture_log_density`, in
PyTensor), its draws (:func:`mixture_random`) and its numpy twin for a batch of parameter
draws (:func:`component_log_density`, used for predictions after sampling). Rows with
missing values are :mod:`bayes_gmm.missing_density`'s, which builds on these.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LOG_2PI",
    "component_log_density",
    "core_parameter",
    "mixture_log_density",
    "mixture_random",
]

LOG_2PI = float(np.log(2.0 * np.pi))


# ---------------------------------------------------------------------------
# The observed variable: the mixture density with the labels summed out
# ---------------------------------------------------------------------------


def core_parameter(param, core_ndim):
    """Drop the broadcast batch dimensions ``pm.CustomDist`` adds in front of a core parameter.

    Parameters
    ----------
    param : tensor of shape (..., *core_shape)
        A parameter as a CustomDist's ``logp`` receives it.
    core_ndim : int
        Number of core dimensions (``len(core_shape)``).

    Returns
    -------
    tensor of shape core_shape
        The first entry along each leading batch dimension.
    """
    while param.ndim > core_ndim:
        param = param[0]
    return param


def mixture_log_density(value, weights, means, prec_chol, sample_weight):
    """Weighted log mixture density of each row, in PyTensor (the observed variable's logp).

    Parameters
    ----------
    value : tensor of shape (n, d)
    weights : tensor of shape (K,)
    means : tensor of shape (K, d)
    prec_chol : tensor of shape (K, d, d)
        Lower Cholesky factors ``U_k`` of the precisions, ``P_k = U_k U_k^T``.
    sample_weight : tensor of shape (n,)

    Returns
    -------
    tensor of shape (n,)
        ``sample_weight_n * log sum_k weights_k N(x_n | means_k, P_k^-1)``.
    """
    import pytensor.tensor as pt

    from bayes_gmm._mixture_op import mixture_rows

    weights, means, prec_chol = (
        core_parameter(weights, 1),
        core_parameter(means, 2),
        core_parameter(prec_chol, 3),
    )
    # The Gaussian log density is linear in the features [x_i x_j (i <= j), x] of a row:
    # log N(x | mu, P^-1) = -x'Px/2 + (P mu)'x - mu'P mu/2 + log|P|/2 - d log(2 pi)/2,
    # so a gradient costs two thin matrix products over the rows instead of a (n, K, d)
    # array. Rows are centred first, which keeps the expansion's cancellation harmless.
    centre = pt.mean(value, axis=0)
    x, m = value - centre, means - centre
    K, d = means.shape[0], means.shape[1]
    P = pt.matmul(prec_chol, prec_chol.mT)
    p_mu = pt.sum(P * m[:, None, :], axis=-1)  # (K, d): P_k m_k
    half_logdet = pt.sum(pt.log(pt.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    offset = pt.log(weights) + half_logdet - 0.5 * pt.sum(m * p_mu, axis=-1) - 0.5 * d * LOG_2PI
    static_d = value.type.shape[-1]
    if static_d is None:  # a graph without the data's width: the plain expression
        quad = (x[:, :, None] * x[:, None, :]).reshape((x.shape[0], d * d))
        coef = pt.concatenate([-0.5 * P.reshape((K, d * d)), p_mu], axis=1)
        features = pt.concatenate([quad, x], axis=1).T
        return sample_weight * pt.logsumexp(pt.dot(coef, features) + offset[:, None], axis=0)
    rows, cols = np.triu_indices(static_d)  # the order of _mixture_op.row_features
    quad_coef = P[:, rows, cols] * np.where(rows == cols, 1.0, 2.0)
    coef = pt.concatenate([-0.5 * quad_coef, p_mu], axis=1)
    # One node for sample_weight * logsumexp(coef @ features(x) + offset, components): the
    # sampler swaps its sum for a fused pass over the rows (bayes_gmm._mixture_op). Rows
    # go along the last axis (x.T, data only: the sampler computes it once), so that a
    # pass over them reads contiguous memory per coordinate.
    return mixture_rows(coef, offset, x.T, sample_weight)


def mixture_random(weights, means, prec_chol, sample_weight, rng=None, size=None):
    """Draws from the mixture (numpy): the observed variable's ``random``.

    Parameters
    ----------
    weights : ndarray of shape (..., K)
    means : ndarray of shape (..., K, d)
    prec_chol : ndarray of shape (..., K, d, d)
        Lower factors with ``Sigma_k^-1 = U U^T``; of leading batch dimensions, only
        the first entry is used (as :func:`core_parameter`).
    sample_weight : ndarray of shape (n,)
        Its shape is the draw's when ``size`` is None; its values are not used.
    rng : numpy.random.Generator
    size : int or tuple of int, default=None

    Returns
    -------
    ndarray of shape (*size, d)
    """
    weights = np.asarray(weights).reshape(-1, np.shape(weights)[-1])[0]
    K, d = np.shape(means)[-2:]
    means = np.asarray(means).reshape(-1, K, d)[0]
    prec_chol = np.asarray(prec_chol).reshape(-1, K, d, d)[0]
    size = tuple(np.atleast_1d(size)) if size is not None else np.shape(sample_weight)
    n = int(np.prod(size))
    labels = rng.choice(K, size=n, p=weights / weights.sum())
    # x = mu + U^-T z has covariance (U U^T)^-1.
    z = rng.standard_normal((n, d))
    eps = np.empty_like(z)
    for k in range(K):
        rows = labels == k
        if rows.any():
            eps[rows] = np.linalg.solve(prec_chol[k].T, z[rows].T).T
    return (means[labels] + eps).reshape(*size, d)


# ---------------------------------------------------------------------------
# numpy: densities for a batch of parameter draws (prediction after sampling)


def component_log_density(X, weights, means, prec_chol):
    """``log weights_k + log N(x_n | mu_k, Sigma_k)`` for a batch of parameter draws.

    The numpy counterpart of :func:`mixture_log_density` for many draws at once
    (membership probabilities, predictive densities); a test pins the two together.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    weights : ndarray of shape (S, K)
    means : ndarray of shape (S, K, d)
    prec_chol : ndarray of shape (S, K, d, d)
        Lower factors with ``Sigma_k^-1 = U U^T``.

    Returns
    -------
    ndarray of shape (S, n, K)
        Keep ``S * n * K`` moderate: callers pass chunks of draws and rows. (A
        transposed view of an (n, S, K) array.)
    """
    (S, K), (n, d) = weights.shape, X.shape
    # As mixture_log_density: linear in the rows' features [x_i x_j (i <= j), x] of
    # centred rows, so all draws and components are one matrix product (BLAS).
    centre = X.mean(axis=0)
    x, m = X - centre, means - centre
    rows, cols = np.triu_indices(d)
    features = np.concatenate([x[:, rows] * x[:, cols], x], axis=1)  # (n, q)
    P = np.matmul(prec_chol, np.swapaxes(prec_chol, -1, -2))  # (S, K, d, d)
    p_mu = np.einsum("skij,skj->ski", P, m)
    coef = np.concatenate(
        [-0.5 * P[..., rows, cols] * np.where(rows == cols, 1.0, 2.0), p_mu], axis=-1
    )  # (S, K, q)
    half_logdet = np.sum(np.log(np.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    with np.errstate(divide="ignore"):
        offset = np.log(weights) + half_logdet - 0.5 * np.einsum("ski,ski->sk", m, p_mu)
    offset -= 0.5 * d * LOG_2PI
    out = (features @ coef.reshape(S * K, -1).T).reshape(n, S, K).transpose(1, 0, 2)
    out += offset[:, None, :]
    return out
