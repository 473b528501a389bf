"""Compiled EM for several starts of one mixture on small data (numba).

A model-selection grid runs thousands of EM iterations on a few hundred or thousand rows.
There one iteration of the vectorized numpy EM costs mostly the fixed overhead of its few
dozen numpy calls (~90 us), not arithmetic (a few us). This kernel runs whole EM runs in
compiled code instead: the same E-step (log-densities linear in the features ``T(x)`` of
:func:`bayes_gmm._gaussian.features`), the same M-step as
:func:`bayes_gmm._gaussian.from_summaries` (maximum likelihood with ``reg_covar``, or the
closed-form MAP update), the same objective (plus the log prior density under a prior) and
the same stopping rule as ``GaussianMixture._run_em``.

One compiled signature serves every covariance structure (selected by an integer code), so
numba compiles once per installation (about 7 s on 2 cores; later processes load it from
its disk cache).
Covariances travel as (R, K, d, d) matrices whatever the structure: "tied" uses
``covs[r, 0]``, "diag" the diagonals and "spherical" ``covs[r, k, 0, 0]``.

Cases that ``GaussianMixture`` repairs and warns about (a covariance that is not numerically
positive definite, a component that lost its weight) stop the start with a status code; the
caller reruns it through ``GaussianMixture``.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from bayes_gmm._structured import CODES as _STRUCTURED_CODES
from bayes_gmm._structured import precision_into, structured_covariances

#: scikit-learn's four structures have their own M-step here; mclust's other ten (codes 4
#: to 13) are evaluated as "full" and take their covariances from ``_structured``.
CTYPE_CODES = {"full": 0, "tied": 1, "diag": 2, "spherical": 3, **_STRUCTURED_CODES}
_FULL, _TIED, _DIAG, _SPHERICAL = 0, 1, 2, 3

#: Status of a start after :func:`run_starts`.
OK, NOT_POSITIVE_DEFINITE, EMPTIED = 0, 1, 2

_LOG_2PI = math.log(2.0 * math.pi)
_EPS = float(np.finfo(np.float64).eps)
# Reassociation lets the per-row loops and sums vectorize. Not "nnan"/"ninf": a zero
# weight's log is -inf and must stay so. numpy's error model drops the zero checks numba
# puts before every division (5% of the kernel's time): no divisor here can be zero (a
# row's total is at least 1, counts carry 10 eps, variances are checked positive first).
_jit = numba.njit(
    cache=True,
    nogil=True,
    error_model="numpy",
    fastmath={"reassoc", "contract", "arcp", "nsz"},
)


@_jit
def _natural_parameters(ctype, log_weights, means, covs, eta, const, prec, log_dets, work):
    """Natural parameters of every component (as ``_gaussian.natural_parameters``).

    Fills ``eta`` (K, m), ``const`` (K,) (with the log weights added), ``prec`` (K, d, d)
    (for "tied" only ``prec[0]``; for "diag"/"spherical" the diagonal) and ``log_dets``
    (K,) log det of the covariances. Returns False if a covariance is not positive
    definite.
    """
    K, d = means.shape
    chol, inv_chol = work[0], work[1]
    for k in range(K):
        if ctype == _FULL or (ctype == _TIED and k == 0):
            ok, log_det = precision_into(covs[k], prec[k], chol, inv_chol)
            if not ok:
                return False
            log_dets[k] = log_det
        elif ctype == _TIED:
            for a in range(d):
                for b in range(d):
                    prec[k, a, b] = prec[0, a, b]
            log_dets[k] = log_dets[0]
        else:
            log_det = 0.0
            for j in range(d):
                var = covs[k, j, j] if ctype == _DIAG else covs[k, 0, 0]
                if not var > 0.0:
                    return False
                prec[k, j, j] = 1.0 / var
                log_det += math.log(var)
            log_dets[k] = log_det
        quad = 0.0
        for a in range(d):
            if ctype == _FULL or ctype == _TIED:
                s = 0.0
                for b in range(d):
                    s += prec[k, a, b] * means[k, b]
            else:
                s = prec[k, a, a] * means[k, a]
            eta[k, a] = s
            quad += s * means[k, a]
        if ctype == _FULL:
            col = d
            for a in range(d):
                for b in range(a, d):
                    eta[k, col] = -0.5 * prec[k, a, b] * (1.0 if a == b else 2.0)
                    col += 1
        elif ctype == _DIAG:
            for a in range(d):
                eta[k, d + a] = -0.5 * prec[k, a, a]
        elif ctype == _SPHERICAL:
            eta[k, d] = -0.5 * prec[k, 0, 0]
        const[k] = log_weights[k] - 0.5 * quad - 0.5 * log_dets[k] - 0.5 * d * _LOG_2PI
    return True


# Without reassociation: it would merge the two-part reduction by log 2 back into one
# rounded product (measured relative error 2e-14 instead of 2e-16).
@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _exp_rows(resp, top, bits, total):
    """``resp[k] = exp(resp[k] - top)`` for each row k of (K, n) ``resp``; ``total`` their sum.

    For ``resp <= top``, in loops that vectorize: ``math.exp`` is a scalar libm call
    (3-4 ns); this is a Cody-Waite reduction ``x = k log 2 + r`` with a degree-13 Taylor
    polynomial for ``exp(r)`` (relative error below 1e-15) and ``2**k`` written into the
    exponent bits (``bits``, (n,) int64 work space). Differences below -708 give 0.
    """
    inv_ln2 = 1.4426950408889634
    ln2_hi = 6.93147180369123816490e-01
    ln2_lo = 1.90821492927058770002e-10
    K, n = resp.shape
    scale = bits.view(np.float64)
    for i in range(n):
        total[i] = 0.0
    for k in range(K):
        row = resp[k]
        for i in range(n):
            v = row[i] - top[i]
            x = max(v, -708.0)
            kk = math.floor(x * inv_ln2 + 0.5)
            r = (x - kk * ln2_hi) - kk * ln2_lo
            p = 1.0 / 6227020800.0
            p = p * r + 1.0 / 479001600.0
            p = p * r + 1.0 / 39916800.0
            p = p * r + 1.0 / 3628800.0
            p = p * r + 1.0 / 362880.0
            p = p * r + 1.0 / 40320.0
            p = p * r + 1.0 / 5040.0
            p = p * r + 1.0 / 720.0
            p = p * r + 1.0 / 120.0
            p = p * r + 1.0 / 24.0
            p = p * r + 1.0 / 6.0
            p = p * r + 0.5
            p = p * r + 1.0
            p = p * r + 1.0
            row[i] = p if v >= -708.0 else 0.0
            bits[i] = (np.int64(kk) + 1023) << 52
        for i in range(n):
            row[i] *= scale[i]
            total[i] += row[i]


@_jit
def _add_constants(resp, const):
    """``resp[k] += const[k]`` for each row k of (K, n) ``resp``, in place."""
    K, n = resp.shape
    for k in range(K):
        row = resp[k]
        c = const[k]
        for i in range(n):
            row[i] += c


@_jit
def _log_densities(feats, eta, const, resp):
    """``resp[k] = const[k] + eta[k] @ feats`` (the weighted log-densities, but for "tied"'s
    shared quadratic term).

    Four features at a time share each pass over a component's row (a quarter of the
    loads and stores of the row).
    """
    K, m = eta.shape
    n = feats.shape[1]
    for k in range(K):
        row = resp[k]
        c = const[k]
        for i in range(n):
            row[i] = c
        j = 0
        while j + 4 <= m:
            e0, e1, e2, e3 = eta[k, j], eta[k, j + 1], eta[k, j + 2], eta[k, j + 3]
            f0, f1, f2, f3 = feats[j], feats[j + 1], feats[j + 2], feats[j + 3]
            for i in range(n):
                row[i] += (e0 * f0[i] + e1 * f1[i]) + (e2 * f2[i] + e3 * f3[i])
            j += 4
        for rest in range(j, m):
            e = eta[k, rest]
            f = feats[rest]
            for i in range(n):
                row[i] += e * f[i]


@_jit
def _exp_normalized(resp, top, bits, total):
    """``resp[k] = exp(resp[k] - top)`` with ``top`` the rows' largest log-density (0
    where that is not finite) and ``total`` the sum over components."""
    K, n = resp.shape
    for i in range(n):
        top[i] = resp[0, i]
    for k in range(1, K):
        for i in range(n):
            top[i] = max(top[i], resp[k, i])
    for i in range(n):
        if not math.isfinite(top[i]):
            top[i] = 0.0
    _exp_rows(resp, top, bits, total)


@_jit
def _tied_quadratics(prec, feats, q, s):
    """``q[i] = x_i' A x_i`` for "tied" (``A = prec[0]``, ``x_i = feats[:, i]``).

    In loops over the rows, which vectorize; ``s`` (n,) is work space.
    """
    d = prec.shape[1]
    n = feats.shape[1]
    for i in range(n):
        q[i] = 0.0
    for a in range(d):
        for i in range(n):
            s[i] = 0.0
        for b in range(d):
            p, f = prec[0, a, b], feats[b]
            for i in range(n):
                s[i] += p * f[i]
        f = feats[a]
        for i in range(n):
            q[i] += s[i] * f[i]


@_jit
def _responsibilities(resp, w, unit_weights, top, bits, total, nk, log_norm):
    """The E-step's normalization, shared by the grid's EM (:func:`_e_step`), its
    per-cell responsibilities (:func:`log_norm_and_resp`) and large fits' chunks
    (:func:`chunk_statistics`).

    ``resp`` (K, n) holds the log-densities plus log weights (but for "tied"'s quadratic
    term, the same in every component, which its callers subtract) and is overwritten with
    ``w_i`` times the responsibilities; their sums over rows are added to ``nk`` (K,).
    Returns ``sum_i w_i log p(x_i)``. Where ``log_norm`` has n entries (else none) it is
    filled with each row's ``log p(x_i)``. ``top``, ``total`` (n,) and ``bits`` (n,) int64
    are work space; ``top`` and ``bits`` are free again on return.
    """
    K, n = resp.shape
    _exp_normalized(resp, top, bits, total)
    log_lik = 0.0
    if log_norm.size:
        for i in range(n):
            log_norm[i] = top[i] + math.log(total[i])
            log_lik += w[i] * log_norm[i]
            total[i] = w[i] / total[i]
    elif unit_weights:
        # One scalar log per block of rows instead of one per row (the log is not
        # vectorized): each total is in [1, K], so a product of 32 stays finite for K < 4e9.
        for start in range(0, n, 32):
            product = 1.0
            for i in range(start, min(start + 32, n)):
                product *= total[i]
            log_lik += math.log(product)
        for i in range(n):
            log_lik += top[i]
            total[i] = 1.0 / total[i]
    else:
        for i in range(n):
            log_lik += w[i] * (top[i] + math.log(total[i]))
            total[i] = w[i] / total[i]
    for k in range(K):
        row = resp[k]
        s = 0.0
        for i in range(n):
            row[i] *= total[i]
            s += row[i]
        nk[k] += s
    return log_lik


@_jit
def _e_step(ctype, feats, w, unit_weights, eta, const, prec, resp, top, total, bits, stats, nk,
            no_rows):  # fmt: skip
    """Responsibilities, their weighted sums ``nk`` and moments ``stats = resp @ feats.T``.

    ``feats`` is (m, n), rows along the last axis so that every loop over rows vectorizes.
    ``no_rows`` is an empty array (no per-row log-likelihoods wanted). Returns the weighted
    log-likelihood.
    """
    K, m = eta.shape
    n = feats.shape[1]
    _log_densities(feats, eta, const, resp)
    nk[:] = 0.0
    log_lik = _responsibilities(resp, w, unit_weights, top, bits, total, nk, no_rows)
    if ctype == _TIED:  # the quadratic term shared by all components: -x' A x / 2
        q = top  # free work space
        _tied_quadratics(prec, feats, q, bits.view(np.float64))
        for i in range(n):
            log_lik -= 0.5 * w[i] * q[i]
    for k in range(K):
        row = resp[k]
        j = 0
        while j + 4 <= m:
            f0, f1, f2, f3 = feats[j], feats[j + 1], feats[j + 2], feats[j + 3]
            s0 = s1 = s2 = s3 = 0.0
            for i in range(n):
                r = row[i]
                s0 += r * f0[i]
                s1 += r * f1[i]
                s2 += r * f2[i]
                s3 += r * f3[i]
            stats[k, j], stats[k, j + 1], stats[k, j + 2], stats[k, j + 3] = s0, s1, s2, s3
            j += 4
        for rest in range(j, m):
            f = feats[rest]
            s = 0.0
            for i in range(n):
                s += row[i] * f[i]
            stats[k, rest] = s
    return log_lik


@_jit
def _log_prior(ctype, weights, means, covs, prec, log_dets, prior, prior_mean, prior_scale,
               prior_counts, prior_scatter):  # fmt: skip
    """``ResolvedPrior.log_density`` without its constant (centered frame).

    "full" (VVV and mclust's other models) reads ``prior_counts`` and ``prior_scatter``
    (``Structure.map_prior_terms``; VVV: ``nu + d + 2`` and the scale).
    """
    K, d = means.shape
    alpha, kappa, nu = prior[0], prior[1], prior[2]
    log_p = 0.0
    if alpha != 1.0:
        for k in range(K):
            log_p += (alpha - 1.0) * math.log(weights[k])
    for k in range(K):
        maha = 0.0
        for a in range(d):
            da = means[k, a] - prior_mean[a]
            if ctype == _FULL or ctype == _TIED:
                for b in range(d):
                    maha += da * prec[k, a, b] * (means[k, b] - prior_mean[b])
            else:
                maha += da * da * prec[k, a, a]
        log_p -= 0.5 * log_dets[k] + 0.5 * kappa * maha
        if ctype == _FULL:
            trace = 0.0
            for a in range(d):
                for b in range(d):
                    trace += prior_scatter[k, a, b] * prec[k, b, a]
            log_p -= 0.5 * (prior_counts[k] - 1.0) * log_dets[k] + 0.5 * trace
        elif ctype == _TIED and k == 0:
            trace = 0.0
            for a in range(d):
                for b in range(d):
                    trace += prior_scale[a, b] * prec[k, b, a]
            log_p -= 0.5 * (nu + d + 1.0) * log_dets[k] + 0.5 * trace
        elif ctype == _DIAG:
            for a in range(d):
                var = covs[k, a, a]
                log_p -= (0.5 * nu + 1.0) * math.log(var) + 0.5 * prior_scale[a, a] / var
        elif ctype == _SPHERICAL:
            var = covs[k, 0, 0]
            log_p -= (0.5 * nu + 1.0) * math.log(var) + 0.5 * prior_scale[0, 0] / var
    return log_p


@_jit
def _m_step(ctype, scatter_only, nk, stats, total_weight, tied_moment, reg_covar, use_prior,
            prior, prior_mean, prior_scale, prior_counts, prior_scatter, weights, means, covs,
            counts):  # fmt: skip
    """``_gaussian.from_summaries`` for one start; False if a component lost its weight.

    The "full" layout's update is the posterior scatter plus ``prior_scatter[k]`` over the
    counts ``nk[k] + prior_counts[k]`` (also left in ``counts``); with ``scatter_only``
    ``covs`` keeps the scatter undivided, for mclust's other models' own M-step. The caller
    passes zero prior terms without a prior and a zero ``reg_covar`` with one (and with
    ``scatter_only``), so both are simply added.
    """
    K, d = means.shape
    alpha, kappa, nu = prior[0], prior[1], prior[2]
    eps = 10.0 * _EPS
    for k in range(K):
        if not use_prior and nk[k] <= 1e-12 * total_weight:
            return False
    if ctype == _TIED:
        for a in range(d):
            for b in range(d):
                covs[0, a, b] = tied_moment[a, b]
    for k in range(K):
        n_k = nk[k] + eps
        if use_prior:
            weights[k] = (nk[k] + alpha - 1.0) / (total_weight + K * (alpha - 1.0))
            shrink = kappa * nk[k] / (kappa + nk[k])
        else:
            weights[k] = n_k / total_weight
            shrink = 0.0
        # Scatter about the component mean plus, under a prior, the pull towards its mean.
        for a in range(d):
            xbar_a = stats[k, a] / n_k
            delta_a = xbar_a - prior_mean[a]
            if use_prior:
                means[k, a] = (stats[k, a] + kappa * prior_mean[a]) / (nk[k] + kappa)
            else:
                means[k, a] = xbar_a
            if ctype == _FULL:
                col = d + a * d - a * (a - 1) // 2
                for b in range(a, d):
                    xbar_b = stats[k, b] / n_k
                    v = stats[k, col + b - a] - n_k * xbar_a * xbar_b
                    v += shrink * delta_a * (xbar_b - prior_mean[b])
                    covs[k, a, b] = v
                    covs[k, b, a] = v
            elif ctype == _TIED:
                for b in range(d):
                    xbar_b = stats[k, b] / n_k
                    covs[0, a, b] -= n_k * xbar_a * xbar_b
                    covs[0, a, b] += shrink * delta_a * (xbar_b - prior_mean[b])
            elif ctype == _DIAG:
                v = stats[k, d + a] - n_k * xbar_a * xbar_a + shrink * delta_a * delta_a
                covs[k, a, a] = v
            elif a == 0:  # spherical: one scatter for all coordinates
                v = stats[k, d]
                for b in range(d):
                    xbar_b = stats[k, b] / n_k
                    delta_b = xbar_b - prior_mean[b]
                    v += -n_k * xbar_b * xbar_b + shrink * delta_b * delta_b
                covs[k, 0, 0] = v
        if ctype == _TIED:
            continue
        if ctype == _FULL:
            counts[k] = prior_counts[k] + nk[k] if use_prior else n_k
            divisor = 1.0 if scatter_only else counts[k]  # x / 1.0 is exact
            for a in range(d):
                for b in range(d):
                    covs[k, a, b] = (covs[k, a, b] + prior_scatter[k, a, b]) / divisor
                covs[k, a, a] += reg_covar
            continue
        if use_prior:
            denom = nu + 3.0 + nk[k] if ctype == _DIAG else nu + 2.0 + d + d * nk[k]
        else:
            denom = n_k if ctype == _DIAG else n_k * d
        if ctype == _DIAG:
            for a in range(d):
                covs[k, a, a] = (covs[k, a, a] + prior_scale[a, a]) / denom
                covs[k, a, a] += reg_covar
        else:
            covs[k, 0, 0] = (covs[k, 0, 0] + prior_scale[0, 0]) / denom
            covs[k, 0, 0] += reg_covar
    if ctype == _TIED:
        if use_prior:
            denom = nu + d + 1.0 + K + total_weight
        else:
            denom = 0.0
            for k in range(K):
                denom += nk[k] + eps
        for a in range(d):
            for b in range(d):
                covs[0, a, b] = (covs[0, a, b] + prior_scale[a, b]) / denom
            covs[0, a, a] += reg_covar
    return True


@_jit
def run_starts(ctype, feats, w, weights, means, covs, max_iter, tol, reg_covar, tied_moment,
               use_prior, prior, prior_mean, prior_scale, prior_counts, prior_scatter,
               prior_const, history, n_iter, converged, status, prec_chol):  # fmt: skip
    """Run EM from each of R starts (one after the other) until ``tol`` or ``max_iter``.

    Parameters
    ----------
    ctype : int
        ``CTYPE_CODES[covariance_type]``.
    feats : ndarray of shape (m, n)
        Features of the centered rows, transposed.
    w : ndarray of shape (n,)
        Sample weights.
    weights, means, covs : ndarray of shape (R, K), (R, K, d), (R, K, d, d)
        The starts, overwritten with the parameters at which each run stopped.
    max_iter : ndarray of int of shape (R,)
    tol : float
        Absolute: a run stops when its objective changed by less.
    reg_covar : float
        Added to the covariance diagonals (pass 0 with a prior).
    tied_moment : ndarray of shape (d, d)
        ``sum_i w_i x_i x_i'`` ("tied" only).
    use_prior : bool
    prior : ndarray of shape (3,)
        ``alpha, kappa, nu``.
    prior_mean : ndarray of shape (d,)
        Centered frame (zeros without a prior).
    prior_scale : ndarray of shape (d, d)
        "tied" reads it, "diag" its diagonal, "spherical" ``[0, 0]`` (zeros without a prior;
        the "full" layout reads the next two instead).
    prior_counts, prior_scatter : ndarray of shape (K,), (K, d, d)
        "full" layout: ``ResolvedPrior.map_terms`` (VVV: ``nu + d + 2`` and the scale; zeros
        without a prior).
    prior_const : float
        The parameter-free part of the log prior density.
    history : ndarray of shape (R, max(max_iter) + 1)
        Filled with each run's objective per iteration.
    n_iter, converged, status : ndarray of shape (R,)
        Outputs: M-steps done, whether ``tol`` was reached, ``OK`` / ``NOT_POSITIVE_DEFINITE``
        / ``EMPTIED``.
    prec_chol : ndarray of shape (R, K, d, d)
        Output: the precision factors of the final covariances of the starts that end
        ``OK`` (:func:`_precision_factors`).
    """
    R, K, d = means.shape
    m, n = feats.shape
    total_weight = 0.0
    unit_weights = True
    for i in range(n):
        total_weight += w[i]
        unit_weights = unit_weights and w[i] == 1.0
    eta = np.empty((K, m))
    const = np.empty(K)
    prec = np.zeros((K, d, d))
    log_dets = np.empty(K)
    log_weights = np.empty(K)
    work = np.zeros((2, d, d))
    resp = np.empty((K, n))
    top, total = np.empty(n), np.empty(n)
    bits = np.empty(n, dtype=np.int64)
    stats = np.empty((K, m))
    nk = np.empty(K)
    no_rows = np.empty(0)
    # mclust's other models: stored and evaluated as "full", with their own covariances.
    layout = ctype if ctype <= _SPHERICAL else _FULL
    previous = np.empty((K, d, d))
    scatter = np.empty((K, d, d))
    counts = np.empty(K)
    for r in range(R):
        status[r] = OK
        converged[r] = False
        converging = False  # the M-step after the change below tol is taken, as in sklearn
        previous_objective = -np.inf
        for iteration in range(max_iter[r] + 1):
            for k in range(K):
                log_weights[k] = math.log(weights[r, k]) if weights[r, k] > 0.0 else -np.inf
            if not _natural_parameters(
                layout, log_weights, means[r], covs[r], eta, const, prec, log_dets, work
            ):
                status[r] = NOT_POSITIVE_DEFINITE
                break
            objective = _e_step(
                layout, feats, w, unit_weights, eta, const, prec, resp, top, total, bits, stats,
                nk, no_rows,
            )  # fmt: skip
            if use_prior:
                objective += prior_const + _log_prior(
                    layout, weights[r], means[r], covs[r], prec, log_dets, prior, prior_mean,
                    prior_scale, prior_counts, prior_scatter,
                )  # fmt: skip
            history[r, iteration] = objective
            n_iter[r] = iteration
            if converging or iteration == max_iter[r]:
                converged[r] = converging
                break
            converging = abs(objective - previous_objective) < tol
            previous_objective = objective
            # mclust's other models: their covariances from the "full" layout's posterior
            # scatter and counts (as _gaussian.from_summaries), iterative ones starting from
            # the current covariances.
            structured = layout != ctype
            if structured:
                previous[:] = covs[r]
            if not _m_step(
                layout, structured, nk, stats, total_weight, tied_moment, reg_covar, use_prior,
                prior, prior_mean, prior_scale, prior_counts, prior_scatter, weights[r],
                means[r], scatter if structured else covs[r], counts,
            ):  # fmt: skip
                status[r] = EMPTIED
                break
            if structured and not structured_covariances(ctype, scatter, counts, previous, covs[r]):
                status[r] = NOT_POSITIVE_DEFINITE
                break
        if status[r] == OK:  # the last E-step factored these covariances: they are
            _precision_factors(layout, covs[r], prec_chol[r])


@_jit
def _precision_factors(layout, covs, out):
    """scikit-learn's ``precisions_cholesky_`` of one start's covariances, ``P P' = inv(cov)``.

    In the kernel's (K, d, d) layout: the upper-triangular ``P`` ("full"; "tied" in
    ``out[0]``), or ``1 / sqrt(var)`` on the diagonal ("diag"; "spherical" in
    ``out[k, 0, 0]``). The covariances must be positive definite.
    """
    K, d = covs.shape[0], covs.shape[1]
    work = np.zeros((3, d, d))
    for k in range(K):
        if layout == _FULL or (layout == _TIED and k == 0):
            precision_into(covs[k], work[0], work[1], work[2])
            for a in range(d):
                for b in range(d):
                    out[k, a, b] = work[2, b, a]
        elif layout == _DIAG:
            for a in range(d):
                out[k, a, a] = 1.0 / math.sqrt(covs[k, a, a])
        elif layout == _SPHERICAL:
            out[k, 0, 0] = 1.0 / math.sqrt(covs[k, 0, 0])


@_jit
def log_norm_and_resp(ctype, feats, weights, means, covs, log_norm, resp):
    """Per-row ``log p(x)`` and responsibilities of one mixture, as the E-step computes them.

    ``weights`` (K,), ``means`` (K, d) centered as ``feats`` (m, n), ``covs`` (K, d, d) in
    :func:`run_starts`' layout; fills ``log_norm`` (n,) and ``resp`` (K, n). Returns False
    (leaving them unset) if a covariance is not positive definite.
    """
    K, d = means.shape
    m, n = feats.shape
    layout = ctype if ctype <= _SPHERICAL else _FULL
    log_weights = np.empty(K)
    for k in range(K):
        log_weights[k] = math.log(weights[k]) if weights[k] > 0.0 else -np.inf
    eta, const = np.empty((K, m)), np.empty(K)
    prec, log_dets, work = np.zeros((K, d, d)), np.empty(K), np.zeros((2, d, d))
    if not _natural_parameters(layout, log_weights, means, covs, eta, const, prec, log_dets, work):
        return False
    top, total, bits = np.empty(n), np.empty(n), np.empty(n, dtype=np.int64)
    _log_densities(feats, eta, const, resp)
    _responsibilities(resp, np.ones(n), True, top, bits, total, np.zeros(K), log_norm)
    if layout == _TIED:  # the quadratic term shared by all components: -x' A x / 2
        q = top  # free work space
        _tied_quadratics(prec, feats, q, bits.view(np.float64))
        for i in range(n):
            log_norm[i] -= 0.5 * q[i]
    return True


@_jit
def chunk_statistics(resp, const, feats, w, unit_weights, threshold, moments, top, total,
                     bits, nk, stats, skipped, no_rows):  # fmt: skip
    """One chunk of a large fit's E-step (``GaussianMixture``): responsibilities, their
    sums and the moments of the features, skipping the negligible responsibilities.

    ``resp`` (K, B) holds ``eta @ feats.T`` (BLAS computes it); ``const`` (K,) is added
    here, then ``resp`` is overwritten with ``w * responsibility``. ``feats`` is (B, m).
    Adds to ``nk`` (K,) (every responsibility) and, with ``moments``, to ``stats`` (K, m)
    the sums ``resp[k, i] * feats[i]`` over the rows where the (unweighted)
    responsibility is at least ``threshold``; the weighted responsibilities left out are
    added to ``skipped`` (K,) so the caller can check they do not matter (or add them:
    :func:`left_out_moments`). Where the clusters are apart, most rows have one or two
    components above 1e-20: the M-step's product becomes a few row updates per row.
    Returns the weighted log-likelihood. ``top``, ``total`` (B,) and ``bits`` (B,) int64
    are work space; on return ``top`` holds each row's largest log-density and ``total``
    ``w_i`` over its sum of exponentials (what :func:`left_out_moments` reads). ``no_rows``
    is an empty array (no per-row log-likelihoods wanted), which the caller allocates once.
    """
    K, n = resp.shape
    m = feats.shape[1]
    _add_constants(resp, const)
    log_lik = _responsibilities(resp, w, unit_weights, top, bits, total, nk, no_rows)
    if not moments:
        return log_lik
    kept = bits  # work space again: the rows kept, listed without branches
    for k in range(K):
        n_kept = 0
        left_out = 0.0
        for i in range(n):
            r = resp[k, i]
            keep = r >= (threshold if unit_weights else threshold * w[i])
            kept[n_kept] = i
            n_kept += keep
            left_out += 0.0 if keep else r
        skipped[k] += left_out
        c = 0
        while c + 4 <= n_kept:  # four rows per pass over the component's moments
            i0, i1, i2, i3 = kept[c], kept[c + 1], kept[c + 2], kept[c + 3]
            r0, r1, r2, r3 = resp[k, i0], resp[k, i1], resp[k, i2], resp[k, i3]
            for j in range(m):
                stats[k, j] += (r0 * feats[i0, j] + r1 * feats[i1, j]) + (
                    r2 * feats[i2, j] + r3 * feats[i3, j]
                )
            c += 4
        for rest in range(c, n_kept):
            i = kept[rest]
            r = resp[k, i]
            for j in range(m):
                stats[k, j] += r * feats[i, j]
    return log_lik


@_jit
def left_out_moments(resp, const, top, scale, feats, w, unit_weights, threshold, bits, work,
                     stats):  # fmt: skip
    """The moments :func:`chunk_statistics` left out of a chunk, for some components only.

    ``resp`` (J, B) holds ``eta[components] @ feats.T`` over the chunk's rows and ``const``
    (J,) their constants; ``top`` and ``scale`` (B,) are what :func:`chunk_statistics`
    left in its ``top`` and ``total`` for these rows (each row's largest log-density and
    ``w_i`` over its sum of exponentials). The responsibilities are recomputed as there,
    and ``resp[j, i] * feats[i]`` is added to ``stats`` (J, m) over the rows where the
    (unweighted) responsibility is positive but below ``threshold``. ``bits`` (B,) int64
    and ``work`` (B,) are work space.
    """
    J, n = resp.shape
    m = feats.shape[1]
    _add_constants(resp, const)
    _exp_rows(resp, top, bits, work)
    for j in range(J):
        for i in range(n):
            r = resp[j, i] * scale[i]
            if 0.0 < r < (threshold if unit_weights else threshold * w[i]):
                for a in range(m):
                    stats[j, a] += r * feats[i, a]


@_jit
def features_into(X, center, layout, out):
    """``out[i] = _gaussian.features(X[i] - center)`` for "full", "diag" or "spherical"
    (``layout`` a code): the same products, in the same order except spherical's sum of
    squares (equal to rounding).

    The large fits' E-step computes each chunk's features here just before using them
    twice (log-densities, moments) while they are in cache, instead of streaming stored
    features from memory twice per iteration.
    """
    n, d = X.shape
    if layout != _FULL:  # 2-d indexing: no row views in the loop (1.8x faster for diag)
        for i in range(n):
            for a in range(d):
                out[i, a] = X[i, a] - center[a]
            if layout == _DIAG:
                for a in range(d):
                    out[i, d + a] = out[i, a] * out[i, a]
            elif layout == _SPHERICAL:
                s = 0.0
                for a in range(d):
                    s += out[i, a] * out[i, a]
                out[i, d] = s
        return
    xc = np.empty(d)
    for i in range(n):
        row = out[i]
        for a in range(d):
            xc[a] = X[i, a] - center[a]
            row[a] = xc[a]
        col = d
        for a in range(d):
            # Slices: indices known to be nonnegative (no wraparound checks, which turned
            # this loop into gathers and scatters).
            xa, tail, dst = xc[a], xc[a:], row[col : col + d - a]
            for t in range(d - a):
                dst[t] = xa * tail[t]
            col += d - a
