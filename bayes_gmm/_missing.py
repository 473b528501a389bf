"""EM with values missing at random (Ghahramani & Jordan, 1994).

A row with missing coordinates contributes its *observed-data* likelihood
``p(x_o) = sum_k pi_k N(x_o | mu_k,o, S_k,oo)`` to the objective. The E-step adds, per
component, the conditional expectation of the missing coordinates and of their second
moments given the observed ones,

    E[x_m | x_o, k]        = mu_k,m + S_k,mo S_k,oo^-1 (x_o - mu_k,o)
    Cov[x_m | x_o, k]      = S_k,mm - S_k,mo S_k,oo^-1 S_k,om,

so the M-step is the ordinary one (:func:`bayes_gmm._gaussian.from_summaries`) on
expected sufficient statistics; every covariance structure is handled through its full
(K, d, d) matrices, and the structure only chooses how the expected second moments are
pooled ("tied": summed over components, "diag": their diagonals, "spherical": traces).

Rows are grouped by their pattern of missing values, so the linear algebra of one
pattern is done once for all its rows and vectorized over components.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm.structures import get_layout

__all__ = [
    "check_missing_rows",
    "expected_statistics",
    "impute_column_means",
    "log_norm_and_resp",
    "observed_log_likelihood",
]

_LOG_2PI = np.log(2.0 * np.pi)
#: Rows of one pattern handled at once (bounds the (K, rows, d) temporaries).
_PATTERN_ROWS = 2**14


def check_missing_rows(X, name="X"):
    """Refuse rows whose every value is missing, and columns that are never observed."""
    missing = np.isnan(X)
    empty_rows = np.flatnonzero(missing.all(axis=1))
    if empty_rows.size:
        shown = ", ".join(str(r) for r in empty_rows[:5]) + (", ..." if empty_rows.size > 5 else "")
        raise ValueError(
            f"{name} has {empty_rows.size} row(s) with every value missing (first: {shown}); "
            "they carry no information about the mixture. Drop them first, e.g. "
            "`X = X[~np.isnan(X).all(axis=1)]`."
        )
    empty_cols = np.flatnonzero(missing.all(axis=0))
    if empty_cols.size:
        raise ValueError(
            f"{name} has column(s) {empty_cols.tolist()} with every value missing; nothing can "
            "be estimated for them. Drop those columns first."
        )
    if np.isinf(X).any():
        raise ValueError(
            f"{name} contains infinite values; only NaN is read as missing. Replace the "
            "infinite values (by NaN if they mean 'unknown')."
        )


def impute_column_means(X, sample_weight=None):
    """A copy of ``X`` with each NaN replaced by its column's (weighted) observed mean."""
    w = np.ones(X.shape[0]) if sample_weight is None else sample_weight
    observed = ~np.isnan(X)
    filled = np.where(observed, X, 0.0)
    means = (w @ filled) / (w @ observed)
    return np.where(observed, X, means)


def _patterns(missing):
    """Yield ``(observed_mask, row_indices)`` for each distinct pattern of missing values."""
    if not missing.any():
        yield np.ones(missing.shape[1], dtype=bool), np.arange(missing.shape[0])
        return
    codes, inverse = np.unique(missing, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    order = np.argsort(inverse, kind="stable")
    bounds = np.searchsorted(inverse[order], np.arange(codes.shape[0] + 1))
    for p in range(codes.shape[0]):
        rows = order[bounds[p] : bounds[p + 1]]
        for start in range(0, rows.size, _PATTERN_ROWS):
            yield ~codes[p], rows[start : start + _PATTERN_ROWS]


class _Conditional:
    """The per-component algebra of one pattern: marginal of x_o and regression of x_m on it."""

    def __init__(self, means, full_covs, observed):
        self.o = observed
        self.m = ~observed
        S_oo = full_covs[:, observed][:, :, observed]
        chol = np.linalg.cholesky(S_oo)
        self.chol_inv = np.linalg.inv(chol)  # (K, o, o), L^-1 with S_oo = L L'
        self.log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=1, axis2=2)), axis=1)
        self.mean_o = means[:, observed]
        if self.m.any():
            S_mo = full_covs[:, self.m][:, :, observed]
            S_oo_inv = np.swapaxes(self.chol_inv, 1, 2) @ self.chol_inv
            self.regression = S_mo @ S_oo_inv  # (K, m, o)
            S_mm = full_covs[:, self.m][:, :, self.m]
            self.cond_cov = S_mm - self.regression @ np.swapaxes(S_mo, 1, 2)
            self.mean_m = means[:, self.m]

    def log_density(self, X_o):
        """(K, n) log N(x_o | mu_k,o, S_k,oo) and the (K, n, o) deviations."""
        diff = X_o[None, :, :] - self.mean_o[:, None, :]
        z = diff @ np.swapaxes(self.chol_inv, 1, 2)
        maha = np.einsum("kni,kni->kn", z, z)
        n_obs = int(self.o.sum())
        return -0.5 * (maha + self.log_det[:, None] + n_obs * _LOG_2PI), diff

    def completed(self, X_o, diff):
        """(K, n, d) rows with the missing coordinates replaced by their conditional means."""
        K, n = diff.shape[:2]
        out = np.empty((K, n, self.o.size))
        out[:, :, self.o] = X_o[None]
        if self.m.any():
            out[:, :, self.m] = self.mean_m[:, None, :] + diff @ np.swapaxes(self.regression, 1, 2)
        return out


def _pattern_log_prob(X, weights, means, covariances, covariance_type):
    """Yield ``(rows, conditional, X_o, log weighted density (K, n), deviations)`` per pattern."""
    K, d = means.shape
    full = g.full_covariances(covariances, covariance_type, K, d)
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    for observed, rows in _patterns(np.isnan(X)):
        cond = _Conditional(means, full, observed)
        X_o = X[np.ix_(rows, np.flatnonzero(observed))]
        log_prob, diff = cond.log_density(X_o)
        log_prob += log_w[:, None]
        yield rows, cond, X_o, log_prob, diff


def log_norm_and_resp(X, weights, means, covariances, covariance_type):
    """Observed-data log-density of each row and the responsibilities.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
        NaN marks a missing value; no row may be entirely missing.
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, n_features)
    covariances : ndarray
        scikit-learn shapes: (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical.
    covariance_type : {"full", "tied", "diag", "spherical"}

    Returns
    -------
    log_norm : ndarray of shape (n_samples,)
        ``log sum_k pi_k N(x_o | mu_k,o, S_k,oo)`` over each row's observed coordinates.
    resp : ndarray of shape (n_samples, K)
    """
    n = X.shape[0]
    K = means.shape[0]
    log_norm = np.empty(n)
    resp = np.empty((n, K))
    for rows, _, _, log_prob, _ in _pattern_log_prob(
        X, weights, means, covariances, covariance_type
    ):
        log_norm[rows], r = g.normalize(log_prob)
        resp[rows] = r.T
    return log_norm, resp


def observed_log_likelihood(X, weights, means, covariances, covariance_type):
    """Per-row observed-data log-likelihood of a mixture (NaN = missing at random).

    The marginal density of each row's observed coordinates: the missing ones are
    integrated out exactly. Equal to the ordinary log-density on complete rows.

    ``covariance_type`` may be any structure's name (its storage layout is what counts).

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    from bayes_gmm.structures import layout_of

    X = np.asarray(X, dtype=np.float64)
    layout = layout_of(covariance_type)
    return log_norm_and_resp(X, weights, means, covariances, layout)[0]


def expected_statistics(X, sample_weight, weights, means, covariances, covariance_type):
    """E-step with missing values: expected sufficient statistics and the log-likelihood.

    ``X`` and ``means`` are in the same (centered) frame. The statistics are those
    :func:`bayes_gmm._gaussian.from_summaries` reads: ``sum_xx`` is (K, d, d) full,
    (d, d) tied, (K, d) diag, (K,) spherical.

    Returns
    -------
    SufficientStatistics
    """
    K, d = means.shape
    weight = np.zeros(K)
    sum_x = np.zeros((K, d))
    sum_xx = np.zeros((K, d, d))
    log_likelihood = 0.0
    for rows, cond, X_o, log_prob, diff in _pattern_log_prob(
        X, weights, means, covariances, covariance_type
    ):
        log_norm, resp = g.normalize(log_prob)
        w = sample_weight[rows]
        log_likelihood += float(w @ log_norm)
        resp *= w
        filled = cond.completed(X_o, diff)  # (K, n, d)
        nk = resp.sum(axis=1)
        weight += nk
        sum_x += np.einsum("kn,kni->ki", resp, filled)
        sum_xx += np.einsum("kni,knj->kij", filled * resp[:, :, None], filled)
        if cond.m.any():
            block = np.ix_(np.arange(K), np.flatnonzero(cond.m), np.flatnonzero(cond.m))
            sum_xx[block] += nk[:, None, None] * cond.cond_cov
    pooled = get_layout(covariance_type).second_moments_from_full(sum_xx)
    return g.SufficientStatistics(weight, sum_x, pooled, float(sample_weight.sum()), log_likelihood)


def covariances_from_cholesky(prec_chol, covariance_type):
    """Covariances from the precision factors ``P`` (``P @ P.T = inv(cov)``)."""
    return get_layout(covariance_type).covariances_from_cholesky(prec_chol)
