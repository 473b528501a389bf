"""The observed mixture's log density of rows with missing values, in the PyMC model.

Part of the PyMC model, below it (mixture_density -> missing_density ->
:mod:`bayes_gmm.model`; none imports a later one): when ``X`` has NaN (missing at
random), the observed variable's log density is each row's density of its *observed*
coordinates, the missing ones integrated out exactly
(:func:`observed_mixture_log_density`, in PyTensor). Rows are laid out in blocks
(:func:`missing_blocks`) so that the graph has a bounded number of branches whatever the
number of patterns of missing values; :func:`observed_component_log_density` is the numpy
twin used for predictions after sampling.

Not to be confused with :mod:`bayes_gmm._missing`, the EM engine's missing-value E-step
(conditional means and covariances of the missing coordinates for
``GaussianMixture(missing="em")``): this module is the *posterior's* likelihood, a
PyTensor graph over the model's random variables, and imputes nothing.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm.mixture_density import (
    LOG_2PI,
    component_log_density,
    core_parameter,
    mixture_log_density,
    mixture_random,
)

__all__ = [
    "MIN_PATTERN_ROWS",
    "PATTERN_FRACTION",
    "UNROLLED_MAX",
    "missing_blocks",
    "missing_patterns",
    "observed_component_log_density",
    "observed_mixture_log_density",
    "observed_mixture_random",
]

# Missing values (missing_blocks): a pattern keeps a graph branch of its own with at least
# max(MIN_PATTERN_ROWS, PATTERN_FRACTION * n) rows, so at most 1 / PATTERN_FRACTION
# branches; the other rows are grouped by their number of observed coordinates.
MIN_PATTERN_ROWS = 100
PATTERN_FRACTION = 0.05


# ---------------------------------------------------------------------------
# The observed variable when values are missing: rows laid out by pattern
# ---------------------------------------------------------------------------


def missing_patterns(X):
    """Rows grouped by which coordinates they observe (NaN = missing).

    Parameters
    ----------
    X : ndarray of shape (n, d)

    Returns
    -------
    order : ndarray of shape (n,), int
        Row indices sorted by pattern (stable): ``X[order]`` holds each pattern's rows
        together.
    patterns : tuple of (tuple of bool, int, int)
        Per pattern, which columns it observes and its rows' span ``start:stop`` in
        ``order``.
    """
    order, _, patterns = missing_blocks(X, min_rows=1)  # every pattern a branch of its own
    return order, patterns


def missing_blocks(X, min_rows=None):
    """Rows laid out for :func:`observed_mixture_log_density`: frequent patterns, then the
    rest grouped by how many coordinates they observe.

    A pattern of missing values with at least ``min_rows`` rows (and the complete rows,
    always) keeps a graph branch of its own; the rows of every rarer pattern go into one
    group per count ``m`` of observed coordinates (at most ``d - 1`` groups), whose
    densities are batched over rows. The graph then has at most ``n / min_rows + d``
    branches, whatever the number of patterns (up to ``2**d - 1``).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        NaN = missing; no row entirely NaN.
    min_rows : int, default=None
        Rows a pattern needs for its own branch; ``None``:
        ``max(MIN_PATTERN_ROWS, ceil(PATTERN_FRACTION * n))``. ``1`` gives every pattern a
        branch (:func:`missing_patterns`' layout).

    Returns
    -------
    order : ndarray of shape (n,), int
        Row indices sorted by block (stable within a block).
    columns : ndarray of shape (n, d), int
        Per row (in ``X``'s order), its observed columns in increasing order, then its
        missing ones: row ``i`` observes ``columns[i, :m_i]``.
    blocks : tuple of (key, int, int)
        Each block's key and its rows' span ``start:stop`` in ``order``. The key is a
        tuple of bool (a pattern's branch: which columns it observes) or an int ``m``
        (rows of rare patterns observing ``m`` coordinates).
    """
    missing = np.isnan(np.asarray(X, dtype=float))
    n, d = missing.shape
    if min_rows is None:
        min_rows = max(MIN_PATTERN_ROWS, int(np.ceil(PATTERN_FRACTION * n)))
    codes, inverse = np.unique(missing, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    counts = np.bincount(inverse, minlength=codes.shape[0])
    frequent = (counts >= max(int(min_rows), 1)) | ~codes.any(axis=1)
    # One sort key per row: a frequent pattern's index, else len(codes) + its missing count.
    n_missing = missing.sum(axis=1)
    key = np.where(frequent[inverse], inverse, codes.shape[0] + n_missing)
    order = np.argsort(key, kind="stable")
    keys, starts = np.unique(key[order], return_index=True)
    stops = [*starts[1:], n]
    blocks = tuple(
        (
            tuple(bool(o) for o in ~codes[k]) if k < codes.shape[0] else int(d - (k - len(codes))),
            int(start),
            int(stop),
        )
        for k, start, stop in zip(keys, starts, stops, strict=True)
    )
    columns = np.argsort(missing, axis=1, kind="stable")
    return order, columns, blocks


# Blocks of at most this size are factorized in unrolled elementwise operations over
# (components, rows) arrays (XLA fuses them; a batched LAPACK call per tiny matrix is
# several times slower per gradient); larger ones by batched Cholesky and solve.
UNROLLED_MAX = 4


def _log_det_and_quad(block, b, s):
    """``log|L|`` and ``|L^-1 b|^2`` with ``L`` the Cholesky factor of each ``block``.

    ``block`` (..., s, s) symmetric positive definite, ``b`` (..., s).
    """
    import pytensor.tensor as pt
    from pytensor.tensor.linalg import cholesky, solve_triangular

    if s > UNROLLED_MAX:
        chol = cholesky(block, lower=True)
        z = solve_triangular(chol, b, lower=True, b_ndim=1)
        log_det = pt.sum(pt.log(pt.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        return log_det, pt.sum(z**2, axis=-1)
    L = {}
    for j in range(s):
        L[j, j] = pt.sqrt(block[..., j, j] - sum((L[j, k] ** 2 for k in range(j)), 0.0))
        for i in range(j + 1, s):
            inner = sum((L[i, k] * L[j, k] for k in range(j)), 0.0)
            L[i, j] = (block[..., i, j] - inner) / L[j, j]
    z = []
    for i in range(s):
        z.append((b[..., i] - sum((L[i, k] * z[k] for k in range(i)), 0.0)) / L[i, i])
    log_det = sum(pt.log(L[j, j]) for j in range(s))
    return log_det, sum(zi**2 for zi in z)


def _grouped_log_density(x, cols, m, log_weights, means, prec_chol, covariances, sample_weight):
    """Weighted log mixture density of rows that each observe ``m`` coordinates (PyTensor).

    Row ``i`` observes ``cols[i, :m]`` and misses ``cols[i, m:]``. With ``r = d - m``
    missing, whichever side is smaller is factorized per row and component:

    - ``m <= r``: the covariance block ``Sigma_k[o, o]`` (Cholesky factor ``L``):
      ``log N = -m log(2 pi)/2 - log|L| - |L^-1 (x_o - mu_k,o)|^2 / 2``;
    - ``m > r``: the precision block ``P_k[u, u]`` of the missing coordinates ``u``
      (Schur complement: ``Sigma_oo^-1 = P_oo - P_ou P_uu^-1 P_uo``). With ``delta`` the
      row minus the mean, zero on ``u``, and ``C`` the Cholesky factor of ``P_uu``:
      ``log N = -m log(2 pi)/2 + log|U_k| - log|C| - (delta' P delta - |C^-1 (P delta)_u|^2) / 2``.

    Blocks are gathered directly by the rows' column indices (data): the flat indices
    ``o_i d + o_j`` pick each row's (s, s) block out of the (K, d * d) matrices, and the
    centred row's s entries out of its (K, d) vector (gradients: scatter-adds). Memory:
    (K, rows, s, s) blocks with ``s = min(m, d - m) <= d / 2`` plus (K, rows, d) rows;
    the one-hot products this replaced kept about four (K, rows, s, d) arrays alive for
    the gradient (measured: the README's speed table, ``bench_missing.py``).
    """
    import pytensor.tensor as pt

    d = cols.type.shape[-1]
    # Static where known: JAX needs concrete shapes for the broadcasts below.
    K = means.type.shape[0] or means.shape[0]
    rows = x.type.shape[0] or x.shape[0]
    gone = pt.isnan(x)
    x0 = pt.where(gone, 0.0, x)
    if m <= d - m:
        s, idx = m, cols[:, :m]
        diff = x0[None] - means[:, None, :]  # (K, rows, d)
        delta = pt.take_along_axis(diff, pt.broadcast_to(idx[None], (K, rows, s)), axis=-1)
        matrix, extra, quad_sign, quad_full = covariances, 0.0, 1.0, 0.0
    else:
        s, idx = d - m, cols[:, m:]
        centred = pt.where(gone[None], 0.0, x0[None] - means[:, None, :])  # (K, rows, d)
        t = pt.matmul(centred, prec_chol)  # (K, rows, d): U_k' delta
        p_delta = pt.matmul(t, pt.swapaxes(prec_chol, -1, -2))  # P_k delta
        delta = pt.take_along_axis(p_delta, pt.broadcast_to(idx[None], (K, rows, s)), axis=-1)
        matrix = pt.matmul(prec_chol, pt.swapaxes(prec_chol, -1, -2))
        extra = pt.sum(pt.log(pt.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)[:, None]
        quad_sign, quad_full = -1.0, pt.sum(t**2, axis=-1)
    flat = idx[:, :, None] * d + idx[:, None, :]  # (rows, s, s), data only
    block = matrix.reshape((K, d * d))[:, flat]  # M_k[idx, idx]: (K, rows, s, s)
    log_det, quad = _log_det_and_quad(block, delta, s)
    log_dens = extra - log_det - 0.5 * (quad_full + quad_sign * quad)
    log_dens = log_dens + log_weights[:, None] - 0.5 * m * LOG_2PI
    return sample_weight * pt.logsumexp(log_dens, axis=0)


def observed_mixture_log_density(
    value, weights, means, prec_chol, sample_weight, pattern_order, columns=None, *, patterns
):
    """Weighted log mixture density of each row's *observed* coordinates, in PyTensor.

    The observed variable's logp when ``X`` has missing values (NaN, missing at random):
    the missing coordinates are integrated out, so row ``n`` with observed coordinates
    ``o`` contributes ``log sum_k weights_k N(x_n,o | means_k,o, Sigma_k,oo)``, exactly.
    Rows come in blocks (:func:`missing_blocks`):

    - a frequent pattern's rows are one branch: the pattern's marginal precision factor
      (the Cholesky factor of ``Sigma_k,oo^-1``) goes into :func:`.mixture_log_density`,
      which the complete rows use as it is;
    - the rows of the rare patterns are grouped by their number ``m`` of observed
      coordinates, one branch per group: each row's covariance (or, when fewer are
      missing than observed, precision) block gathered by its column indices
      (``columns``, data), a batched Cholesky, the Gaussian log density
      (:func:`_grouped_log_density`). Memory grows with rows x K x (s^2 + d), with
      ``s = min(m, d - m)``, unbounded in the rows (no chunking); the gradient of the
      one-hot form before kept about 4 x rows x K x s x d alive.

    The graph thus has a bounded number of branches whatever the number of patterns.

    Parameters
    ----------
    value : tensor of shape (n, d)
        NaN where a value is missing; only observed entries are read.
    weights, means, prec_chol, sample_weight
        As for :func:`.mixture_log_density`.
    pattern_order : tensor of shape (n,), int
        ``missing_blocks(X)[0]`` (a ``pm.Data``, so the compiled graph holds no row
        indices).
    columns : tensor of shape (n, d), int, default=None
        ``missing_blocks(X)[1]``; needed when ``patterns`` has grouped rows.
    patterns : tuple
        ``missing_blocks(X)[2]`` (or ``missing_patterns(X)[1]``: one branch per pattern).

    Returns
    -------
    tensor of shape (n,)
    """
    import pytensor.tensor as pt
    from pytensor.tensor.linalg import cholesky, inv, solve_triangular

    from bayes_gmm._mixture_op import scatter_rows

    weights, means, prec_chol = (
        core_parameter(weights, 1),
        core_parameter(means, 2),
        core_parameter(prec_chol, 3),
    )
    # Static row counts: JAX needs every slice and reshape to have a concrete shape.
    n = patterns[-1][2]
    d = next((len(key) for key, _, _ in patterns if isinstance(key, tuple)), None)
    d = d or value.type.shape[-1] or (columns.type.shape[-1] if columns is not None else None)
    if d is None:
        raise ValueError("observed_mixture_log_density needs the static number of features.")
    order = pt.specify_shape(pt.cast(pattern_order, "int64"), (n,))
    rows = pt.specify_shape(value, (n, d))[order]
    row_weights = pt.specify_shape(sample_weight, (n,))[order]
    if columns is not None:
        row_columns = pt.specify_shape(pt.cast(core_parameter(columns, 2), "int64"), (n, d))[order]
    covariances = None
    parts = []
    for key, start, stop in patterns:
        x = pt.specify_shape(rows[start:stop], (stop - start, d))
        w = pt.specify_shape(row_weights[start:stop], (stop - start,))
        if isinstance(key, tuple) and all(key):  # complete rows: the complete-data density
            parts.append(mixture_log_density(x, weights, means, prec_chol, w))
            continue
        if covariances is None:
            # Sigma_k = U_k^-T U_k^-1: the covariance blocks every pattern slices.
            U_inv = solve_triangular(
                prec_chol, pt.broadcast_to(pt.eye(prec_chol.shape[-1]), prec_chol.shape),
                lower=True, b_ndim=2,
            )  # fmt: skip
            covariances = pt.matmul(pt.swapaxes(U_inv, -1, -2), U_inv)
        if not isinstance(key, tuple):
            if columns is None:
                raise ValueError("Grouped rows need the rows' column indices (columns=).")
            cols = pt.specify_shape(row_columns[start:stop], (stop - start, d))
            parts.append(
                _grouped_log_density(
                    x, cols, int(key), pt.log(weights), means, prec_chol, covariances, w
                )
            )
            continue
        cols = np.flatnonzero(key)
        sigma_oo = covariances[:, cols][:, :, cols]
        marginal_chol = cholesky(inv(sigma_oo), lower=True)
        parts.append(mixture_log_density(x[:, cols], weights, means[:, cols], marginal_chol, w))
    by_block = pt.concatenate(parts) if len(parts) > 1 else parts[0]
    # One node, so that the sampler sums the blocks and fuses those it can.
    return scatter_rows(by_block, order)


def observed_mixture_random(
    weights, means, prec_chol, sample_weight, pattern_order, columns, rng=None, size=None
):
    """Complete rows from the mixture: the model does not say which values go missing.

    The ``random`` of the observed variable of :func:`observed_mixture_log_density`;
    ``pattern_order`` and ``columns`` are not used.

    Parameters
    ----------
    weights, means, prec_chol, sample_weight, rng, size
        As for :func:`bayes_gmm.mixture_density.mixture_random`.
    pattern_order : ndarray of shape (n,)
    columns : ndarray of shape (n, d)

    Returns
    -------
    ndarray of shape (*size, d)
    """
    return mixture_random(weights, means, prec_chol, sample_weight, rng=rng, size=size)


# ---------------------------------------------------------------------------
# numpy: the density for a batch of parameter draws (prediction after sampling)


def observed_component_log_density(X, weights, means, prec_chol):
    """:func:`.component_log_density` of each row's observed coordinates (NaN = missing).

    The numpy counterpart of :func:`observed_mixture_log_density`, equal to it (to
    rounding) whatever its layout of rows: per pattern of missing values, the marginal
    precision factor of the observed coordinates goes into :func:`.component_log_density`;
    complete rows use it as they are. (A Python loop over the patterns, not a graph: the
    number of patterns costs no compile time here.)

    Parameters
    ----------
    X : ndarray of shape (n, d)
        No row entirely NaN.
    weights, means, prec_chol
        As for :func:`.component_log_density`.

    Returns
    -------
    ndarray of shape (S, n, K)
    """
    if not np.isnan(X).any():
        return component_log_density(X, weights, means, prec_chol)
    order, patterns = missing_patterns(X)
    out = np.empty((weights.shape[0], X.shape[0], weights.shape[1]))
    covariances = None
    for observed, start, stop in patterns:
        rows = order[start:stop]
        if all(observed):
            out[:, rows] = component_log_density(X[rows], weights, means, prec_chol)
            continue
        if covariances is None:
            U_inv = np.linalg.inv(prec_chol)
            covariances = np.swapaxes(U_inv, -1, -2) @ U_inv
        cols = np.flatnonzero(observed)
        sigma_oo = covariances[..., cols[:, None], cols]
        marginal_chol = np.linalg.cholesky(np.linalg.inv(sigma_oo))
        out[:, rows] = component_log_density(
            X[np.ix_(rows, cols)], weights, means[..., cols], marginal_chol
        )
    return out
