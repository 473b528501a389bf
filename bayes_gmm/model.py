"""The PyMC model of a Gaussian mixture with the component labels summed out.

Stage 1 of the Bayesian pipeline (model -> sampling -> relabel -> diagnostics ->
estimator). This module says what the posterior *is*; nothing here samples.

The model is exactly the conjugate prior of :mod:`bayes_gmm.priors` (the prior whose
mode the EM engine finds for MAP), written with PyMC's own distributions, and one
observed variable: the mixture density of each row with the labels summed out. For
``K`` components and ``d`` features, with hyperparameters ``alpha, m0, kappa, nu,
Lambda`` from :meth:`GaussianMixturePrior.resolve`::

    weights        ~ Dirichlet(alpha * ones(K))
    full:  P_k     ~ Wishart(nu, Lambda^-1)      (Sigma_k = P_k^-1 ~ InvWishart(nu, Lambda))
    tied:  P       ~ Wishart(nu, Lambda^-1)      (one precision shared by all components)
    diag:  tau_kj  ~ Gamma(nu / 2, rate = lambda_j / 2)
    spherical: tau_k ~ Gamma(nu / 2, rate = lambda / 2)
    EII:   tau     ~ Gamma(nu / 2, rate = mean(lambda) / 2)   (one precision for all)
    EEI:   tau_j   ~ Gamma(nu / 2, rate = lambda_j / 2)        (one diagonal for all)
    means_k | P_k  ~ MvNormal(m0, (kappa P_k)^-1)
    X_n            ~ sum_k weights_k MvNormal(means_k, P_k^-1)       (observed)

With missing values (NaN in ``X``) each row's density is that of its observed
coordinates, the missing ones integrated out (:func:`observed_mixture_log_density`).

A Wishart precision is written by its Bartlett decomposition, so its random variables
are plain PyMC distributions: ``P = (L A)(L A)^T`` with ``L`` the Cholesky factor of
``Lambda^-1``, ``A`` lower triangular, ``A_ii^2 ~ ChiSquared(nu - i)`` (variable
``precision_chi2``) and ``A_ij ~ Normal(0, 1)`` below the diagonal
(``precision_offdiag``). ``L A`` is then the lower Cholesky factor of the precision, so
the likelihood needs no matrix factorization. Two variables are ``pm.CustomDist`` instances with
a ``random`` method: the means of full and tied, a normal in precision form (see
``_precision_normal``), and the observed mixture ``X``.

Each covariance structure is one :class:`PosteriorForm` (:data:`POSTERIOR_FORMS`): its
random variables, its precision factor, the EM estimate written in its variables (the
chains' start), and the scale of its start jitter. :func:`build_model` assembles the
shared parts (weights, means, observed mixture).

Data and every data-dependent hyperparameter are ``pm.Data``, so one compiled sampler
serves every data set of the same shape (:mod:`bayes_gmm.sampling`).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from bayes_gmm import _missing
from bayes_gmm.priors import GaussianMixturePrior, ResolvedPrior

__all__ = [
    "POSTERIOR_FORMS",
    "PosteriorForm",
    "build_model",
    "component_log_density",
    "missing_blocks",
    "missing_patterns",
    "mixture_log_density",
    "observed_component_log_density",
    "observed_mixture_log_density",
]

LOG_2PI = float(np.log(2.0 * np.pi))

# Missing values (missing_blocks): a pattern keeps a graph branch of its own with at least
# max(MIN_PATTERN_ROWS, PATTERN_FRACTION * n) rows, so at most 1 / PATTERN_FRACTION
# branches; the other rows are grouped by their number of observed coordinates.
MIN_PATTERN_ROWS = 100
PATTERN_FRACTION = 0.05

# Names shared with BayesianGaussianMixture.idata_ and the relabelling.
COMPONENT, FEATURE, FEATURE_, OBS = "component", "feature", "feature_", "obs"
_DATA_DIMS = {
    "X_data": (OBS, FEATURE),
    "sample_weight": (OBS,),
    "pattern_order": (OBS,),
    "pattern_columns": (OBS, "position"),
    "prior_mean": (FEATURE,),
}


# ---------------------------------------------------------------------------
# The observed variable: the mixture density with the labels summed out
# ---------------------------------------------------------------------------


def _core(param, core_ndim):
    """Drop the broadcast batch dimensions CustomDist adds in front of a core parameter."""
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

    weights, means, prec_chol = _core(weights, 1), _core(means, 2), _core(prec_chol, 3)
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

    Blocks are gathered with one-hot selection matrices of the rows' columns (data:
    matrix products, whose gradients are matrix products too). Memory: (K, rows, s, d)
    arrays with ``s = min(m, d - m) <= d / 2``.
    """
    import pytensor.tensor as pt

    d = cols.type.shape[-1]
    gone = pt.isnan(x)
    x0 = pt.where(gone, 0.0, x)
    one_hot = pt.eq(cols[:, :, None], pt.arange(d)[None, None, :]).astype(x.dtype)  # (n, d, d)
    if m <= d - m:
        select = one_hot[:, :m]  # (rows, m, d), data only
        s = m
        delta = pt.sum(select[None] * (x0[None] - means[:, None, :])[:, :, None, :], axis=-1)
        matrix = covariances
        extra = 0.0
        quad_sign = 1.0
        quad_full = 0.0
    else:
        select = one_hot[:, m:]  # (rows, r, d)
        s = d - m
        centred = pt.where(gone[None], 0.0, x0[None] - means[:, None, :])  # (K, rows, d)
        t = pt.matmul(centred, prec_chol)  # (K, rows, d): U_k' delta
        p_delta = pt.matmul(t, pt.swapaxes(prec_chol, -1, -2))  # P_k delta
        delta = pt.sum(select[None] * p_delta[:, :, None, :], axis=-1)  # (K, rows, r)
        matrix = pt.matmul(prec_chol, pt.swapaxes(prec_chol, -1, -2))
        extra = pt.sum(pt.log(pt.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)[:, None]
        quad_sign = -1.0
        quad_full = pt.sum(t**2, axis=-1)
    # select M_k select': (K, rows, s, s)
    block = pt.matmul(pt.matmul(select[None], matrix[:, None]), pt.swapaxes(select, -1, -2)[None])
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
      (the Cholesky factor of ``Sigma_k,oo^-1``) goes into :func:`mixture_log_density`,
      which the complete rows use as it is;
    - the rows of the rare patterns are grouped by their number ``m`` of observed
      coordinates, one branch per group: each row's covariance (or, when fewer are
      missing than observed, precision) block gathered by its column indices
      (``columns``, data), a batched Cholesky, the Gaussian log density
      (:func:`_grouped_log_density`). Memory grows with rows x K x min(m, d - m) x d,
      unbounded in the rows (no chunking).

    The graph thus has a bounded number of branches whatever the number of patterns.

    Parameters
    ----------
    value : tensor of shape (n, d)
        NaN where a value is missing; only observed entries are read.
    weights, means, prec_chol, sample_weight
        As for :func:`mixture_log_density`.
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

    weights, means, prec_chol = _core(weights, 1), _core(means, 2), _core(prec_chol, 3)
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
        row_columns = pt.specify_shape(pt.cast(_core(columns, 2), "int64"), (n, d))[order]
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
    return pt.set_subtensor(pt.zeros((n,), dtype=by_block.dtype)[order], by_block)


def _mixture_random(weights, means, prec_chol, sample_weight, rng=None, size=None):
    """Draws from the mixture (numpy): the observed variable's ``random``."""
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


def _observed_mixture_random(
    weights, means, prec_chol, sample_weight, pattern_order, columns, rng=None, size=None
):
    """Complete rows from the mixture: the model does not say which values go missing."""
    return _mixture_random(weights, means, prec_chol, sample_weight, rng=rng, size=size)


# ---------------------------------------------------------------------------
# One form per covariance structure
# ---------------------------------------------------------------------------


class PosteriorForm:
    """How one covariance structure enters the PyMC model.

    Subclasses add the structure's random variables and say how the EM estimate is
    written in them. ``covariance_type`` is the name ``GaussianMixture`` uses.
    """

    covariance_type: str = ""
    # Dims of the covariances' Deterministic after any (chain, draw) batch.
    covariance_dims: tuple = ()
    # How the prior's covariance scale enters: a Wishart factor ("full"), one Gamma rate
    # per coordinate ("diag") or one rate ("spherical").
    hyper_scale: str = "full"

    def add_precision(self, K, d, hyper):
        """Add the structure's random variables to the model being built.

        Returns
        -------
        prec_chol : tensor of shape (K, d, d)
            Lower Cholesky factors of the component precisions.
        covariances : tensor
            In scikit-learn's shape for the structure (stored as a Deterministic).
        add_means : callable
            ``add_means(m0, kappa, transform)`` adds the means' random variable, whose
            prior scale is the structure's covariance over ``kappa``.
        """
        raise NotImplementedError

    def start_values(self, covariances, hyper_values):
        """The structure's random variables at given covariances (constrained scale).

        Parameters
        ----------
        covariances : ndarray
            scikit-learn shape for the structure.
        hyper_values : dict
            The hyperparameters' values (see :func:`model_data`).

        Returns
        -------
        dict of str -> ndarray
        """
        raise NotImplementedError

    def jitter_scale(self, values, n_k, n_total):
        """Approximate posterior sd of each structure variable on the unconstrained scale.

        Parameters
        ----------
        values : dict
            :meth:`start_values` at the EM estimate.
        n_k : ndarray of shape (K,)
            Effective number of rows per component.
        n_total : float

        Returns
        -------
        dict of str -> ndarray
            Keyed by random-variable name, shaped like the variable.
        """
        raise NotImplementedError


def _tril_labels(d, features):
    rows, cols = np.tril_indices(d, -1)
    return [f"{features[i]},{features[j]}" for i, j in zip(rows, cols, strict=True)]


def _bartlett(hyper, batch, dims):
    """A Wishart(nu, (L L^T)) precision factor ``L A`` from Bartlett variables."""
    import pymc as pm
    import pytensor.tensor as pt

    L, nu = hyper["prior_precision_chol"], hyper["nu"]
    d = hyper["d"]
    idx = np.arange(d)
    chi2 = pm.ChiSquared("precision_chi2", nu=nu - idx.astype(float), dims=(*dims, FEATURE))
    A = pt.zeros((*batch, d, d))
    A = pt.set_subtensor(A[..., idx, idx], pt.sqrt(chi2))
    if d > 1:
        rows, cols = np.tril_indices(d, -1)
        off = pm.Normal("precision_offdiag", 0.0, 1.0, dims=(*dims, "tril"))
        A = pt.set_subtensor(A[..., rows, cols], off)
    return pt.matmul(L, A)


def _bartlett_start(precisions, L):
    """Bartlett variables of given precisions under the prior factor ``L``."""
    U = np.linalg.cholesky(precisions)
    A = np.linalg.solve(L, U)  # L^-1 U: lower triangular with a positive diagonal
    d = A.shape[-1]
    values = {"precision_chi2": np.diagonal(A, axis1=-2, axis2=-1) ** 2}
    if d > 1:
        rows, cols = np.tril_indices(d, -1)
        values["precision_offdiag"] = A[..., rows, cols]
    return values


def _precision_normal_logp(value, mean, kappa, prec_chol):
    """log MvNormal(value | mean, (kappa U U^T)^-1), from the precision factor ``U``."""
    import pytensor.tensor as pt

    d = value.shape[-1]
    z = pt.sum((value - mean)[..., :, None] * prec_chol, axis=-2)  # U^T (x - m)
    half_logdet = pt.sum(pt.log(pt.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    return 0.5 * d * (pt.log(kappa) - LOG_2PI) + half_logdet - 0.5 * kappa * pt.sum(z**2, axis=-1)


def _precision_normal_random(mean, kappa, prec_chol, rng=None, size=None):
    """Draws of ``mean + (sqrt(kappa) U^T)^-1 z``: covariance (kappa U U^T)^-1."""
    size = (
        tuple(size)
        if size is not None
        else np.broadcast_shapes(np.shape(mean)[:-1], np.shape(prec_chol)[:-2])
    )
    d = np.shape(mean)[-1]
    z = rng.standard_normal((*size, d))
    U = np.broadcast_to(prec_chol, (*size, d, d))
    x = np.linalg.solve(np.swapaxes(U, -1, -2), z[..., None])[..., 0]
    return mean + x / np.sqrt(kappa)


def _precision_normal(name, mean, kappa, prec_chol, transform):
    """``MvNormal(mean, (kappa P)^-1)`` per component, from the precision factor of ``P``.

    Written as a ``pm.CustomDist`` in precision form: ``pm.MvNormal(tau=...)`` fails on a
    batch of precisions in PyMC 6.4, and ``pm.MvNormal(cov=...)`` needs K matrix
    inversions and Cholesky factorizations per gradient (3x slower per NUTS step here).
    """
    import pymc as pm

    kwargs = {} if transform is None else {"transform": transform}
    return pm.CustomDist(
        name,
        mean,
        kappa,
        prec_chol,
        logp=_precision_normal_logp,
        random=_precision_normal_random,
        signature="(d),(),(d,d)->(d)",
        dims=(COMPONENT, FEATURE),
        **kwargs,
    )


def _gamma_precisions(hyper, dims):
    """Precisions ``~ Gamma(nu / 2, rate = scale / 2)``: the conjugate prior of a variance."""
    import pymc as pm

    return pm.Gamma(
        "precisions", alpha=hyper["nu"] / 2.0, beta=hyper["prior_scale"] / 2.0, dims=dims
    )


def _precision_normal_means(prec_chol):
    """``add_means`` of a structure with a precision factor: ``MvNormal(m0, (kappa P)^-1)``."""

    def add_means(m0, kappa, transform=None):
        return _precision_normal("means", m0, kappa, prec_chol, transform)

    return add_means


def _normal_means(precision):
    """``add_means`` of a diagonal structure: independent normals of variance
    ``1 / (kappa * precision)``, ``precision`` broadcasting to (component, feature)."""

    def add_means(m0, kappa, transform=None):
        import pymc as pm
        import pytensor.tensor as pt

        sigma = 1.0 / pt.sqrt(kappa * precision)
        kwargs = {} if transform is None else {"transform": transform}
        return pm.Normal("means", mu=m0, sigma=sigma, dims=(COMPONENT, FEATURE), **kwargs)

    return add_means


def _inverse_from_chol(U):
    """``(U U^T)^-1`` from lower factors ``U`` (..., d, d)."""
    import pytensor.tensor as pt
    from pytensor.tensor.linalg import solve_triangular

    d = U.shape[-1]
    eye = pt.eye(d)
    if U.ndim == 2:
        U_inv = solve_triangular(U, eye, lower=True)
    else:
        U_inv = pt.stack([solve_triangular(U[k], eye, lower=True) for k in range(U.type.shape[0])])
    return pt.matmul(pt.swapaxes(U_inv, -1, -2), U_inv)


class FullForm(PosteriorForm):
    """Each component its own precision ``P_k ~ Wishart(nu, Lambda^-1)`` (mclust VVV)."""

    covariance_type = "full"
    covariance_dims = (COMPONENT, FEATURE, FEATURE_)

    def add_precision(self, K, d, hyper):

        U = _bartlett(hyper, (K,), (COMPONENT,))
        covs = _inverse_from_chol(U)

        return U, covs, _precision_normal_means(U)

    def start_values(self, covariances, hyper_values):
        return _bartlett_start(np.linalg.inv(covariances), hyper_values["prior_precision_chol"])

    def jitter_scale(self, values, n_k, n_total):
        per = 1.0 / np.sqrt(n_k)[:, None]
        out = {"precision_chi2": np.broadcast_to(per, values["precision_chi2"].shape)}
        if "precision_offdiag" in values:
            d = values["precision_chi2"].shape[-1]
            _, cols = np.tril_indices(d, -1)
            out["precision_offdiag"] = np.sqrt(values["precision_chi2"][:, cols]) * per
        return out


class TiedForm(PosteriorForm):
    """One precision ``P ~ Wishart(nu, Lambda^-1)`` shared by all components (mclust EEE)."""

    covariance_type = "tied"
    covariance_dims = (FEATURE, FEATURE_)

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        U = _bartlett(hyper, (), ())
        cov = _inverse_from_chol(U)

        return pt.broadcast_to(U, (K, d, d)), cov, _precision_normal_means(U)

    def start_values(self, covariances, hyper_values):
        return _bartlett_start(np.linalg.inv(covariances), hyper_values["prior_precision_chol"])

    def jitter_scale(self, values, n_k, n_total):
        per = 1.0 / np.sqrt(max(n_total, 1.0))
        out = {"precision_chi2": np.full(values["precision_chi2"].shape, per)}
        if "precision_offdiag" in values:
            d = values["precision_chi2"].shape[-1]
            _, cols = np.tril_indices(d, -1)
            out["precision_offdiag"] = np.sqrt(values["precision_chi2"][cols]) * per
        return out


class DiagForm(PosteriorForm):
    """Each component its own diagonal precision, ``tau_kj ~ Gamma`` (mclust VVI)."""

    covariance_type = "diag"
    covariance_dims = (COMPONENT, FEATURE)
    hyper_scale = "diag"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, (COMPONENT, FEATURE))
        U = pt.sqrt(tau)[:, :, None] * pt.eye(d)[None]

        return U, 1.0 / tau, _normal_means(tau)

    def start_values(self, covariances, hyper_values):
        return {"precisions": 1.0 / np.asarray(covariances, dtype=float)}

    def jitter_scale(self, values, n_k, n_total):
        return {
            "precisions": np.broadcast_to(1.0 / np.sqrt(n_k)[:, None], values["precisions"].shape)
        }


class SphericalForm(PosteriorForm):
    """Each component its own single precision, ``tau_k ~ Gamma`` (mclust VII)."""

    covariance_type = "spherical"
    covariance_dims = (COMPONENT,)
    hyper_scale = "spherical"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, (COMPONENT,))
        U = pt.sqrt(tau)[:, None, None] * pt.eye(d)[None]

        return U, 1.0 / tau, _normal_means(tau[:, None])

    def start_values(self, covariances, hyper_values):
        return {"precisions": 1.0 / np.asarray(covariances, dtype=float)}

    def jitter_scale(self, values, n_k, n_total):
        return {"precisions": 1.0 / np.sqrt(n_k)}


class SharedSphericalForm(PosteriorForm):
    """One precision shared by every component and coordinate, ``tau ~ Gamma`` (mclust EII).

    The Gamma analogue of the spherical prior for a single shared variance: the EM
    engine's MAP for EII is mclust's, which leaves this scale out for K >= 2, so its
    estimate is near, not at, this model's mode (the chains start there all the same).
    """

    covariance_type = "EII"
    covariance_dims = (COMPONENT, FEATURE, FEATURE_)
    hyper_scale = "spherical"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, ())
        U = pt.sqrt(tau) * pt.broadcast_to(pt.eye(d), (K, d, d))

        return U, pt.broadcast_to(pt.eye(d) / tau, (K, d, d)), _normal_means(tau)

    def start_values(self, covariances, hyper_values):
        cov = np.asarray(covariances, dtype=float)
        return {"precisions": np.asarray(1.0 / np.mean(np.diagonal(cov[0])))}

    def jitter_scale(self, values, n_k, n_total):
        return {"precisions": np.asarray(1.0 / np.sqrt(max(n_total, 1.0)))}


class SharedDiagForm(PosteriorForm):
    """One diagonal precision shared by every component, ``tau_j ~ Gamma`` (mclust EEI).

    The EM engine's MAP for EEI (mclust's update, with the scale's diagonal) is this
    model's mode in the variances.
    """

    covariance_type = "EEI"
    covariance_dims = (COMPONENT, FEATURE, FEATURE_)
    hyper_scale = "diag"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, (FEATURE,))
        U = pt.broadcast_to(pt.sqrt(tau)[:, None] * pt.eye(d), (K, d, d))

        cov = pt.broadcast_to((1.0 / tau)[:, None] * pt.eye(d), (K, d, d))
        return U, cov, _normal_means(tau)

    def start_values(self, covariances, hyper_values):
        cov = np.asarray(covariances, dtype=float)
        return {"precisions": 1.0 / np.diagonal(cov[0]).copy()}

    def jitter_scale(self, values, n_k, n_total):
        return {"precisions": np.full(values["precisions"].shape, 1.0 / np.sqrt(max(n_total, 1)))}


#: The structures the posterior supports, by the name ``GaussianMixture`` gives them.
POSTERIOR_FORMS = {
    form.covariance_type: form
    for form in (
        FullForm(), TiedForm(), DiagForm(), SphericalForm(), SharedSphericalForm(),
        SharedDiagForm(),
    )
}  # fmt: skip


def posterior_form(covariance_type):
    """The :class:`PosteriorForm` of a covariance structure (scikit-learn's or mclust's
    name), or an error naming the closest supported structure."""
    from bayes_gmm.structures import canonical_name, get_structure

    structure = get_structure(covariance_type)
    form = POSTERIOR_FORMS.get(canonical_name(structure))
    if form is None:
        closest = canonical_name(structure.closest_posterior_structure())
        supported = ", ".join(POSTERIOR_FORMS)
        raise ValueError(
            f"The posterior supports covariance_type {supported}; {covariance_type!r} has no "
            f"proper prior with an unconstrained parameterization. The closest supported "
            f"structure is {closest!r}: use covariance_type={closest!r}."
        )
    return form


# ---------------------------------------------------------------------------
# Ordering the first coordinate of the means (relabel="ordered")
# ---------------------------------------------------------------------------


def _first_column_ordered():
    """A transform that keeps ``means[:, 0]`` strictly increasing over the components."""
    import pytensor.tensor as pt
    from pymc.logprob.transforms import Transform

    class FirstColumnOrdered(Transform):
        name = "first_column_ordered"

        def forward(self, value, *inputs):
            first = value[:, 0]
            y0 = pt.concatenate([first[:1], pt.log(first[1:] - first[:-1])])
            return pt.set_subtensor(value[:, 0], y0)

        def backward(self, value, *inputs):
            y0 = value[:, 0]
            first = pt.concatenate([y0[:1], y0[0] + pt.cumsum(pt.exp(y0[1:]))])
            return pt.set_subtensor(value[:, 0], first)

        def log_jac_det(self, value, *inputs):
            # One term per component (the means' logp is per component): log of the gaps.
            return pt.concatenate([pt.zeros((1,)), value[1:, 0]])

    return FirstColumnOrdered()


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def model_data(X, sample_weight, resolved, covariance_type):
    """Values of the model's ``pm.Data`` containers for one data set and prior.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    resolved : ResolvedPrior
    covariance_type : str
        The structure whose hyperparameters to give (EII and EEI take the diagonal of
        ``resolved``'s full scale).

    Returns
    -------
    dict of str -> ndarray
    """
    values = {
        "X_data": np.ascontiguousarray(X, dtype=float),
        "sample_weight": np.ascontiguousarray(sample_weight, dtype=float),
        "prior_mean": np.asarray(resolved.mean, dtype=float),
        "alpha": np.asarray(resolved.weight_concentration, dtype=float),
        "kappa": np.asarray(resolved.mean_precision, dtype=float),
        "nu": np.asarray(resolved.degrees_of_freedom, dtype=float),
    }
    scale = np.asarray(resolved.scale, dtype=float)
    kind = posterior_form(covariance_type).hyper_scale
    if kind == "full":
        # The Wishart scale of the precision is Lambda^-1; its Cholesky factor L.
        values["prior_precision_chol"] = np.linalg.cholesky(np.linalg.inv(scale))
    else:
        diagonal = np.diagonal(scale) if scale.ndim == 2 else scale
        values["prior_scale"] = diagonal if kind == "diag" else np.asarray(np.mean(diagonal))
    return values


def _static_shape(name, d):
    """The data's feature count is fixed per model (it sizes the density's features)."""
    return (None, d) if name == "X_data" else None


def build_model(
    X,
    n_components,
    covariance_type="full",
    prior=None,
    sample_weight=None,
    *,
    ordered=False,
    feature_names=None,
):
    """The PyMC model of a Gaussian mixture for data ``X``, labels summed out.

    Parameters
    ----------
    X : ndarray or DataFrame of shape (n_samples, n_features)
        Finite data (validated by the caller); a DataFrame's columns name the features.
    n_components : int
    covariance_type : str, default="full"
        One of :data:`POSTERIOR_FORMS` ("full", "tied", "diag", "spherical", "EII",
        "EEI") or its mclust name ("VVV", "EEE", "VVI", "VII").
    prior : GaussianMixturePrior, ResolvedPrior or None, default=None
        ``None``: ``GaussianMixturePrior()`` resolved on ``X``.
    sample_weight : ndarray of shape (n_samples,), default=None
        Multiplies each row's log-likelihood (integer weights equal repeated rows).
    ordered : bool, default=False
        Constrain ``means[:, 0]`` to increase with the component index.
    feature_names : list of str, default=None
        Labels of the ``feature`` coordinate (default: a DataFrame's columns, else
        ``x0, x1, ...``).

    Returns
    -------
    pymc.Model
        Coords ``component``, ``feature``, ``feature_``, ``obs`` (and ``tril`` for the
        Bartlett off-diagonals). Random variables ``weights`` (Dirichlet), ``means``
        and the structure's precision variables (see :data:`POSTERIOR_FORMS`);
        Deterministics ``covariances`` (scikit-learn's shape for the structure) and
        ``precisions_cholesky`` (component, feature, feature_); the observed ``X`` (obs,
        feature). Data containers ``X_data``, ``sample_weight`` and the hyperparameters
        (``prior_mean``, ``alpha``, ``kappa``, ``nu``, ``prior_precision_chol`` or
        ``prior_scale``). ``model.bayes_gmm`` holds ``(n_components, covariance_type,
        ordered)``.

    Examples
    --------
    >>> import pymc as pm
    >>> from bayes_gmm.datasets import load_faithful
    >>> from bayes_gmm.model import build_model
    >>> model = build_model(load_faithful().to_numpy(), 2, "tied")
    >>> sorted(rv.name for rv in model.free_RVs)
    ['means', 'precision_chi2', 'precision_offdiag', 'weights']
    >>> prior = pm.sample_prior_predictive(draws=10, model=model)  # doctest: +SKIP
    """
    import pymc as pm

    form = posterior_form(covariance_type)
    if feature_names is None and hasattr(X, "columns"):
        feature_names = [str(c) for c in X.columns]
    X = np.asarray(X, dtype=float)
    n, d = X.shape
    K = int(n_components)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if prior is None:
        prior = GaussianMixturePrior()
    missing = bool(np.isnan(X).any())
    if isinstance(prior, ResolvedPrior):
        resolved = prior
    else:
        # As GaussianMixture(missing="em"): the data-scaled defaults from the
        # column-mean-imputed data.
        X_full = _missing.impute_column_means(X, w) if missing else X
        resolved = prior.resolve(X_full, K, covariance_type, sample_weight=w)
    values = model_data(X, w, resolved, covariance_type)
    if missing:
        order, columns, patterns = missing_blocks(X)
        values["pattern_order"] = order
        values["pattern_columns"] = columns
    features = [f"x{j}" for j in range(d)] if feature_names is None else list(feature_names)
    coords = {
        COMPONENT: np.arange(K),
        FEATURE: features,
        FEATURE_: features,
        OBS: np.arange(n),
    }
    if d > 1:
        coords["tril"] = _tril_labels(d, features)
    if missing:
        coords["position"] = np.arange(d)

    with pm.Model(coords=coords) as model:
        # pm.Data refuses NaN (it points to PyMC's imputation, which samples every missing
        # value): X_data is created with zeros in their place, then holds the data as they
        # are, since the likelihood integrates the missing values out and reads only the
        # observed entries.
        initial = dict(values, X_data=np.nan_to_num(values["X_data"]))
        data = {
            name: pm.Data(name, value, dims=_DATA_DIMS.get(name), shape=_static_shape(name, d))
            for name, value in initial.items()
        }
        if missing:
            data["X_data"].set_value(values["X_data"])
        hyper = dict(data, d=d)
        weights = pm.Dirichlet("weights", a=data["alpha"] * np.ones(K), dims=COMPONENT)
        prec_chol, covariances, add_means = form.add_precision(K, d, hyper)
        pm.Deterministic("covariances", covariances, dims=form.covariance_dims)
        pm.Deterministic("precisions_cholesky", prec_chol, dims=(COMPONENT, FEATURE, FEATURE_))
        ordering = _first_column_ordered() if ordered else None
        means = add_means(data["prior_mean"], data["kappa"], ordering)
        density = {
            "logp": mixture_log_density,
            "random": _mixture_random,
            "signature": "(k),(k,d),(k,d,d),()->(d)",
        }
        extra = ()
        if missing:  # the rows' pattern order too; the density of their observed values
            extra = (data["pattern_order"], data["pattern_columns"])
            density = {
                "logp": partial(observed_mixture_log_density, patterns=patterns),
                "random": _observed_mixture_random,
                "signature": "(k),(k,d),(k,d,d),(),(),(d)->(d)",
            }
        pm.CustomDist(
            "X",
            weights,
            means,
            prec_chol,
            data["sample_weight"],
            *extra,
            **density,
            observed=data["X_data"],
            dims=(OBS, FEATURE),
        )
    model.bayes_gmm = (K, covariance_type, bool(ordered))
    return model


# ---------------------------------------------------------------------------
# numpy: densities for a batch of parameter draws (prediction after sampling)
# ---------------------------------------------------------------------------


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


def observed_component_log_density(X, weights, means, prec_chol):
    """:func:`component_log_density` of each row's observed coordinates (NaN = missing).

    The numpy counterpart of :func:`observed_mixture_log_density`, equal to it (to
    rounding) whatever its layout of rows: per pattern of missing values, the marginal
    precision factor of the observed coordinates goes into :func:`component_log_density`;
    complete rows use it as they are. (A Python loop over the patterns, not a graph: the
    number of patterns costs no compile time here.)

    Parameters
    ----------
    X : ndarray of shape (n, d)
        No row entirely NaN.
    weights, means, prec_chol
        As for :func:`component_log_density`.

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
