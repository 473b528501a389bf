"""Gaussian mixture math, one small pure function per task, chosen by covariance type.

Conventions (those of scikit-learn's ``sklearn.mixture``):

- ``covariances``: (K, d, d) "full", (d, d) "tied", (K, d) "diag", (K,) "spherical".
- ``prec_chol``: a factor ``P`` of the precision, ``P @ P.T = inv(cov)``, in the same shapes
  ("diag" and "spherical" store ``1 / sqrt(var)``).

Data passed here are already *centered* by a fixed point (the weighted data mean) and the
means are expressed in the same frame. The second moments accumulated about that point
then lose almost no precision when the M-step turns them into scatter matrices.

Everything is vectorized over components: the only loops are over chunks of rows, which
keep temporaries of shape (rows, K, d) bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

_LOG_2PI = np.log(2.0 * np.pi)
#: Target number of float64 elements in one (rows, K, d) temporary (~8 MB).
CHUNK_ELEMENTS = 2**20


def n_parameters(n_components, n_features, covariance_type):
    """Number of free parameters of a mixture.

    ``K - 1`` weights, ``K d`` means and the covariance parameters: ``K d (d + 1) / 2``
    (full), ``d (d + 1) / 2`` (tied), ``K d`` (diag) or ``K`` (spherical).

    Examples
    --------
    >>> n_parameters(3, 2, "tied")
    11
    """
    K, d = int(n_components), int(n_features)
    cov = {
        "full": K * d * (d + 1) // 2,
        "tied": d * (d + 1) // 2,
        "diag": K * d,
        "spherical": K,
    }[covariance_type]
    return cov + K * d + K - 1


def chunk_rows(n_samples, n_components, n_features):
    """Rows per chunk so one (rows, K, d) temporary stays near ``CHUNK_ELEMENTS``."""
    return int(max(256, min(n_samples, CHUNK_ELEMENTS // max(1, n_components * n_features))))


# --------------------------------------------------------------------------- precisions
def precision_cholesky(covariances, covariance_type):
    """Factor of the precision of each component, repairing non-positive-definite input.

    Returns
    -------
    prec_chol : ndarray
        Same shape as ``covariances``.
    covariances : ndarray
        The covariances actually used (equal to the input unless a repair was needed).
    repaired : list of tuple (int, float)
        ``(component, added_to_diagonal)`` for each component whose covariance was not
        numerically positive definite; component ``-1`` stands for the tied matrix.
    """
    repaired = []
    if covariance_type in ("full", "tied"):
        covs = covariances if covariance_type == "full" else covariances[None]
        try:
            chol = np.linalg.cholesky(covs)
        except np.linalg.LinAlgError:
            covs = covs.copy()
            chol = np.empty_like(covs)
            for k in range(covs.shape[0]):  # failure path only: not per iteration
                chol[k], added = _robust_cholesky(covs[k])
                if added:
                    covs[k].flat[:: covs.shape[-1] + 1] += added
                    repaired.append((k if covariance_type == "full" else -1, added))
        d = covs.shape[-1]
        eye = np.broadcast_to(np.eye(d), covs.shape)
        prec_chol = np.swapaxes(linalg.solve_triangular(chol, eye, lower=True), -1, -2)
        if covariance_type == "tied":
            return prec_chol[0], covs[0], repaired
        return prec_chol, covs, repaired
    var = np.asarray(covariances, dtype=float)
    bad = ~(var > 0)
    if bad.any():
        scale = float(np.max(var[~bad])) if (~bad).any() else 1.0
        added = 1e-10 * max(scale, 1e-300)
        var = np.where(bad, added, var)
        comps = np.unique(np.nonzero(bad)[0])
        repaired.extend((int(k), added) for k in comps)
    return 1.0 / np.sqrt(var), var, repaired


def _robust_cholesky(cov):
    """Cholesky factor of ``cov``, adding a growing multiple of its scale to the diagonal."""
    d = cov.shape[0]
    scale = max(float(np.mean(np.abs(np.diag(cov)))), np.finfo(float).tiny)
    added = 0.0
    for exponent in range(-12, 3):
        try:
            return np.linalg.cholesky(cov + added * np.eye(d)), added
        except np.linalg.LinAlgError:
            added = scale * 10.0**exponent
    return np.linalg.cholesky(cov + added * np.eye(d)), added


def log_det_precision_cholesky(prec_chol, covariance_type, n_features):
    """``log det P`` per component (half the log-determinant of the precision)."""
    if covariance_type == "full":
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)
    if covariance_type == "tied":
        return np.sum(np.log(np.diag(prec_chol)))
    if covariance_type == "diag":
        return np.sum(np.log(prec_chol), axis=1)
    return n_features * np.log(prec_chol)


def precisions_from_cholesky(prec_chol, covariance_type):
    """Precision matrices (or vectors) ``P @ P.T`` from their factors."""
    if covariance_type == "full":
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)
    if covariance_type == "tied":
        return prec_chol @ prec_chol.T
    return prec_chol**2


def covariances_from_precisions(precisions, covariance_type):
    """Invert user-given precisions (``precisions_init``) into covariances."""
    if covariance_type in ("full", "tied"):
        return np.linalg.inv(precisions)
    return 1.0 / precisions


# --------------------------------------------------------------------------- E-step
def log_gaussian_prob(Xc, means, prec_chol, covariance_type):
    """Log-density of each row under each component.

    Parameters
    ----------
    Xc : ndarray of shape (n, d)
    means : ndarray of shape (K, d)
        In the same (centered) frame as ``Xc``.
    prec_chol : ndarray
    covariance_type : str

    Returns
    -------
    ndarray of shape (n, K)
    """
    n, d = Xc.shape
    K = means.shape[0]
    log_det = log_det_precision_cholesky(prec_chol, covariance_type, d)
    if covariance_type == "full":
        # One GEMM for all components: (n, d) @ (d, K*d).
        stacked = np.ascontiguousarray(prec_chol.transpose(1, 0, 2)).reshape(d, K * d)
        Y = Xc @ stacked
        Y -= np.einsum("kd,kde->ke", means, prec_chol).reshape(K * d)
        np.square(Y, out=Y)
        maha = Y.reshape(n, K, d).sum(axis=2)
    elif covariance_type == "tied":
        Y = Xc @ prec_chol
        M = means @ prec_chol
        maha = np.square(Y).sum(axis=1)[:, None] - 2.0 * (Y @ M.T) + np.square(M).sum(axis=1)
    elif covariance_type == "diag":
        prec = prec_chol**2
        maha = np.square(Xc) @ prec.T - 2.0 * (Xc @ (means * prec).T)
        maha += np.sum(np.square(means) * prec, axis=1)
    else:
        prec = prec_chol**2
        maha = np.square(Xc).sum(axis=1)[:, None] - 2.0 * (Xc @ means.T)
        maha += np.square(means).sum(axis=1)
        maha *= prec
    # Expanded forms can round slightly below zero for points at a mean.
    np.maximum(maha, 0.0, out=maha)
    return -0.5 * (d * _LOG_2PI + maha) + log_det


def log_normalize(weighted_log_prob):
    """Row-wise log-sum-exp and the normalized log-responsibilities (in place).

    Returns
    -------
    log_norm : ndarray of shape (n,)
    log_resp : ndarray of shape (n, K)
        The input array, normalized.
    """
    top = weighted_log_prob.max(axis=1)
    top[~np.isfinite(top)] = 0.0
    weighted_log_prob -= top[:, None]
    log_norm = np.log(np.exp(weighted_log_prob).sum(axis=1))
    weighted_log_prob -= log_norm[:, None]
    return log_norm + top, weighted_log_prob


@dataclass
class SufficientStatistics:
    """What the E-step hands to the M-step (all about the fixed ``center``).

    Attributes
    ----------
    weight : ndarray of shape (K,)
        Sum of ``sample_weight * responsibility`` per component.
    sum_x : ndarray of shape (K, d)
        Weighted sum of the centered rows per component.
    sum_xx : ndarray
        Weighted second moments about ``center``: (K, d, d) full, (d, d) tied (the same
        for every iteration, so it is computed once), (K, d) diag, (K,) spherical.
    total_weight : float
    log_likelihood : float
        ``sum_i w_i log p(x_i)`` at the parameters the E-step used.
    """

    weight: np.ndarray
    sum_x: np.ndarray
    sum_xx: np.ndarray
    total_weight: float
    log_likelihood: float

    def __iadd__(self, other):
        self.weight += other.weight
        self.sum_x += other.sum_x
        self.sum_xx += other.sum_xx
        self.total_weight += other.total_weight
        self.log_likelihood += other.log_likelihood
        return self


def summarize(Xc, sample_weight, resp, covariance_type):
    """Sufficient statistics of one chunk from its responsibilities.

    Parameters
    ----------
    Xc : ndarray of shape (n, d)
    sample_weight : ndarray of shape (n,)
    resp : ndarray of shape (n, K)
        Responsibilities; overwritten with ``sample_weight * resp``.
    covariance_type : str
        For "tied" ``sum_xx`` is left at zero: the responsibilities sum to one, so the
        pooled second moment does not depend on them and the driver computes it once
        (:func:`weighted_second_moment`).
    """
    n, d = Xc.shape
    K = resp.shape[1]
    resp *= sample_weight[:, None]
    weight = resp.sum(axis=0)
    sum_x = resp.T @ Xc
    if covariance_type == "full":
        weighted = resp[:, :, None] * Xc[:, None, :]
        sum_xx = (weighted.reshape(n, K * d).T @ Xc).reshape(K, d, d)
    elif covariance_type == "tied":
        sum_xx = np.zeros((d, d))
    elif covariance_type == "diag":
        sum_xx = resp.T @ np.square(Xc)
    else:
        sum_xx = resp.T @ np.square(Xc).sum(axis=1)
    return SufficientStatistics(weight, sum_x, sum_xx, float(sample_weight.sum()), 0.0)


def weighted_second_moment(Xc, sample_weight):
    """``sum_i w_i x_i x_i^T`` (the pooled moment "tied" needs)."""
    return (Xc * sample_weight[:, None]).T @ Xc


# --------------------------------------------------------------------------- M-step
@dataclass(frozen=True)
class CenteredPrior:
    """A :class:`~bayes_gmm.priors.ResolvedPrior` moved into the centered frame."""

    alpha: float
    kappa: float
    mean: np.ndarray
    nu: float
    scale: np.ndarray


def from_summaries(stats, covariance_type, reg_covar, prior=None):
    """M-step: weights, means and covariances that maximize the expected objective.

    Under a prior (``CenteredPrior``) the closed-form MAP update of the conjugate
    Dirichlet x Normal-inverse-Wishart model is used and ``reg_covar`` is not added:
    the prior's scale already keeps every covariance positive definite, and adding
    anything would break the monotone increase of the log-posterior.

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
        Centered frame.
    covariances : ndarray
    """
    # sklearn adds 10 eps so that an empty component does not divide by zero.
    nk = stats.weight + 10 * np.finfo(float).eps
    K, d = stats.sum_x.shape
    xbar = stats.sum_x / nk[:, None]
    if covariance_type == "full":
        scatter = stats.sum_xx - nk[:, None, None] * xbar[:, :, None] * xbar[:, None, :]
    elif covariance_type == "tied":
        scatter = stats.sum_xx - (xbar * nk[:, None]).T @ xbar
    elif covariance_type == "diag":
        scatter = stats.sum_xx - nk[:, None] * np.square(xbar)
    else:
        scatter = stats.sum_xx - nk * np.square(xbar).sum(axis=1)

    if prior is None:
        weights = nk / stats.total_weight
        means = xbar
        if covariance_type == "full":
            covariances = scatter / nk[:, None, None]
            covariances[:, np.arange(d), np.arange(d)] += reg_covar
        elif covariance_type == "tied":
            covariances = scatter / nk.sum()
            covariances.flat[:: d + 1] += reg_covar
        elif covariance_type == "diag":
            covariances = scatter / nk[:, None] + reg_covar
        else:
            covariances = scatter / (nk * d) + reg_covar
        return weights, means, covariances

    alpha, kappa, nu = prior.alpha, prior.kappa, prior.nu
    weights = (stats.weight + alpha - 1.0) / (stats.total_weight + K * (alpha - 1.0))
    means = (stats.sum_x + kappa * prior.mean) / (stats.weight + kappa)[:, None]
    shrink = kappa * stats.weight / (kappa + stats.weight)
    delta = xbar - prior.mean
    if covariance_type == "full":
        outer = delta[:, :, None] * delta[:, None, :]
        covariances = prior.scale + scatter + shrink[:, None, None] * outer
        covariances /= (nu + d + 2.0 + stats.weight)[:, None, None]
    elif covariance_type == "tied":
        covariances = prior.scale + scatter + (delta * shrink[:, None]).T @ delta
        covariances /= nu + d + 1.0 + K + stats.total_weight
    elif covariance_type == "diag":
        covariances = prior.scale + scatter + shrink[:, None] * np.square(delta)
        covariances /= (nu + 3.0 + stats.weight)[:, None]
    else:
        covariances = prior.scale + scatter + shrink * np.square(delta).sum(axis=1)
        covariances /= nu + 2.0 + d + d * stats.weight
    return weights, means, covariances
