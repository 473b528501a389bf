"""Gaussian mixture math, one small pure function per task, chosen by covariance type.

Conventions (those of scikit-learn's ``sklearn.mixture``):

- ``covariances``: (K, d, d) "full", (d, d) "tied", (K, d) "diag", (K,) "spherical".
- ``prec_chol``: a factor ``P`` of the precision, ``P @ P.T = inv(cov)``, in the same shapes
  ("diag" and "spherical" store ``1 / sqrt(var)``).

Data passed here are already *centered* by a fixed point (the weighted data mean) and the
means are expressed in the same frame. The second moments accumulated about that point
then lose almost no precision when the M-step turns them into scatter matrices.

Everything is vectorized over components: the only loops are over chunks of rows, which
keep temporaries of shape (rows, K) and (rows, d (d + 1) / 2) bounded.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import threading
from dataclasses import dataclass

import numpy as np

from bayes_gmm.structures import (
    get_layout,
    get_structure,
)

_LOG_2PI = np.log(2.0 * np.pi)
#: Target number of float64 elements in one chunk's widest temporary (~2 MB); larger
#: chunks were not faster in benchmarks/bench_em.py.
CHUNK_ELEMENTS = 2**18
#: The per-row features of the training data are kept across EM iterations when they fit
#: in this many bytes, and recomputed chunk by chunk otherwise.
FEATURE_CACHE_BYTES = 2**30


def n_parameters(n_components, n_features, covariance_type):
    """Number of free parameters of a mixture (see ``Structure.n_parameters``).

    ``K - 1`` weights, ``K d`` means and the covariance parameters: ``K d (d + 1) / 2``
    (full), ``d (d + 1) / 2`` (tied), ``K d`` (diag), ``K`` (spherical), and mclust's
    count of volumes, shapes and orientations for its other models.

    Examples
    --------
    >>> n_parameters(3, 2, "tied")
    11
    >>> n_parameters(2, 4, "VEV")
    26
    """
    return get_structure(covariance_type).n_parameters(n_components, n_features)


def feature_width(n_features, covariance_type):
    """Number of columns of :func:`features`."""
    return get_layout(covariance_type).feature_width(n_features)


def chunk_rows(n_samples, n_components, n_features, covariance_type="full"):
    """Rows per chunk so that the chunk's widest temporary stays near ``CHUNK_ELEMENTS``.

    The widest temporaries are the (rows, K) responsibilities and the (rows, m) features.
    """
    width = max(n_components, feature_width(n_features, covariance_type))
    return int(max(256, min(n_samples, CHUNK_ELEMENTS // max(1, width))))


#: Below this many multiply-adds per row (feature width x K), one EM pass is a string of
#: small matrix products, and multi-threaded BLAS costs more than it gains: on a busy
#: 2-core machine it was up to 50x slower (threads spin waiting for a core).
SMALL_PROBLEM_WORK = 2048


@functools.cache
def _blas_controller():
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


#: Worker threads for the E-step; ``None`` means one per available core (at most 8).
N_WORKERS = None
#: A worker gets at least this many chunks, or the rows are not split.
MIN_CHUNKS_PER_WORKER = 4


def _available_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def n_available_workers():
    """Worker threads wanted: ``N_WORKERS``, else one per available core (at most 8)."""
    return N_WORKERS if N_WORKERS is not None else min(_available_cores(), 8)


def n_workers(n_samples, rows):
    """How many threads share an E-step over ``n_samples`` rows in chunks of ``rows``."""
    wanted = n_available_workers()
    chunks = -(-n_samples // rows)
    return max(1, min(wanted, chunks // MIN_CHUNKS_PER_WORKER))


@functools.cache
def worker_pool():
    """The shared thread pool of the E-step (created on first use)."""
    return concurrent.futures.ThreadPoolExecutor(
        max_workers=min(_available_cores(), 8), thread_name_prefix="bayes_gmm"
    )


def share_out(step, n_items, workers):
    """``[step(i) for i in range(n_items)]``, on the calling thread and ``workers - 1``
    threads of :func:`worker_pool`, each taking the next item when done with one.

    A thread slowed for a while (its core shared with another process) takes fewer items
    instead of holding up the rest; the results keep the items' order. A helper that never
    started (the pool busy, e.g. when called from one of its threads) has nothing left to
    do and is not waited for.
    """
    results = [None] * n_items
    items = iter(range(n_items))
    lock = threading.Lock()

    def work():
        while True:
            with lock:
                i = next(items, None)
            if i is None:
                return
            results[i] = step(i)

    helpers = [worker_pool().submit(work) for _ in range(min(workers, n_items) - 1)]
    try:
        work()
    finally:
        for helper in helpers:
            if not helper.cancel():
                helper.result()
    return results


_single_threaded_depth = 0
_single_threaded_lock = threading.Lock()


@contextlib.contextmanager
def single_threaded():
    """Context that runs BLAS and OpenMP (k-means) on one thread.

    Nested uses cost nothing: threadpoolctl's limit (about 50 us, more than an E-step on
    a few hundred rows) is taken by the outermost one only, which a selection grid holds
    around its thousands of small fits.
    """
    global _single_threaded_depth
    with _single_threaded_lock:
        outermost = _single_threaded_depth == 0
        _single_threaded_depth += 1
    try:
        if outermost:
            with _blas_controller().limit(limits=1):
                yield
        else:
            yield
    finally:
        with _single_threaded_lock:
            _single_threaded_depth -= 1


def blas_threads_for(n_components, n_features, covariance_type):
    """:func:`single_threaded` for small problems, no change for large ones."""
    if feature_width(n_features, covariance_type) * n_components > SMALL_PROBLEM_WORK:
        return contextlib.nullcontext()
    return single_threaded()


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
    return get_layout(covariance_type).precision_cholesky(covariances)


def log_det_precision_cholesky(prec_chol, covariance_type, n_features):
    """``log det P`` per component (half the log-determinant of the precision)."""
    return get_layout(covariance_type).log_det_precision_cholesky(prec_chol, n_features)


def precisions_from_cholesky(prec_chol, covariance_type):
    """Precision matrices (or vectors) ``P @ P.T`` from their factors."""
    return get_layout(covariance_type).precisions_from_cholesky(prec_chol)


def covariances_from_precisions(precisions, covariance_type):
    """Invert user-given precisions (``precisions_init``) into covariances."""
    return get_layout(covariance_type).covariances_from_precisions(precisions)


# --------------------------------------------------------------------------- E-step
def features(Xc, covariance_type, out=None):
    """Sufficient statistics ``T(x)`` of each (centered) row.

    A Gaussian log-density is linear in ``T(x)``: ``log N(x | m, S) = T(x) @ eta + c`` with
    natural parameters ``eta`` (:func:`natural_parameters`). So the E-step for all
    components is one matrix product ``T @ eta`` and the M-step's statistics are
    ``resp.T @ T``, whatever K is.

    Columns: "full" ``[x, x_i x_j for i <= j]`` (row-major upper triangle), "diag"
    ``[x, x**2]``, "spherical" ``[x, |x|**2]``, "tied" ``[x]`` (its quadratic term is the
    same for every component and is added separately).

    ``out``, if given, is filled instead of a new array (an (n, m) view is fine).

    Returns
    -------
    ndarray of shape (n, feature_width(d, covariance_type))
    """
    layout = get_layout(covariance_type)
    n, d = Xc.shape
    if out is None:
        out = np.empty((n, layout.feature_width(d)))
    out[:, :d] = Xc
    layout.fill_second_order_features(Xc, out)
    return out


def natural_parameters(means, prec_chol, covariance_type):
    """``eta`` and ``c`` with ``log N(x | mean_k, cov_k) = eta[k] @ features(x) + c[k]``.

    For "tied" the term ``-x' A x / 2`` shared by all components is left out (see
    :func:`linear_log_prob`).

    Returns
    -------
    eta : ndarray of shape (K, feature_width)
    const : ndarray of shape (K,)
    """
    layout = get_layout(covariance_type)
    d = means.shape[-1]
    log_det = layout.log_det_precision_cholesky(prec_chol, d)
    eta, prec_means = layout.natural_parameters(means, prec_chol)
    const = -0.5 * np.einsum("ki,ki->k", means, prec_means) + log_det
    const -= 0.5 * d * _LOG_2PI
    return np.ascontiguousarray(eta), const


def linear_log_prob(feats, eta, const, covariance_type, prec_chol=None):
    """Component log-densities ``eta @ feats.T + const`` of a chunk, shape (K, n).

    Components run along the first axis so that the log-sum-exp over components reduces
    contiguous rows (3-4x faster than reducing a short last axis). The quadratic form is
    expanded (``x'Ax - 2 x'Am + m'Am``); with centered data the rounding this adds to a
    log-density is about ``eps * |x - center|_A ** 2``, far below anything that matters.
    For "tied" the quadratic term shared by all components is added here.
    """
    out = eta @ feats.T
    out += const[:, None]
    get_layout(covariance_type).add_shared_log_prob(out, feats, prec_chol)
    return out


def normalize(log_prob, axis=0):
    """Log-sum-exp over components and the responsibilities, in place (one exp pass).

    Parameters
    ----------
    log_prob : ndarray of shape (K, n), or with the components along ``axis``
        Weighted component log-densities; overwritten with the responsibilities.
    axis : int, default=0
        The component axis.

    Returns
    -------
    log_norm : ndarray of shape (n,), or ``log_prob``'s shape without ``axis``
    resp : ndarray, the shape of ``log_prob``
    """
    top = _reduce_over(np.maximum, log_prob, axis)
    top[~np.isfinite(top)] = 0.0
    log_prob -= top
    resp = np.exp(log_prob, out=log_prob)
    total = _reduce_over(np.add, resp, axis)
    resp /= total
    return np.squeeze(np.log(total) + top, axis=axis), resp


def _reduce_over(ufunc, a, axis):
    """``ufunc.reduce`` over ``axis``, keeping it, as elementwise passes over its slices.

    The component axis is short (K): numpy's reduction over a short innermost axis (the
    posterior's (draws, rows, K) blocks) runs 3-4x slower than K - 1 elementwise passes.
    Over any other axis (EM's (K, rows) chunks) numpy's own reduction makes the same
    passes without a Python call per component, which costs EM's many chunks (measured
    on benchmarks/bench_em.py's full case, K = 16, 214 chunks per E-step: commit ddd2f55).
    """
    if axis % a.ndim != a.ndim - 1:
        return ufunc.reduce(a, axis=axis, keepdims=True)
    slices = np.moveaxis(a, axis, 0)
    out = slices[0].copy()
    for s in slices[1:]:
        ufunc(out, s, out=out)
    return np.expand_dims(out, axis)


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


def summarize(feats, sample_weight, resp, covariance_type, n_features):
    """Sufficient statistics of one chunk from its responsibilities.

    Accumulate chunks with ``+=``, then call :func:`finish_moments` once.

    Parameters
    ----------
    feats : ndarray of shape (n, m)
        ``features(Xc, covariance_type)`` of the chunk.
    sample_weight : ndarray of shape (n,) or None
        ``None`` means unit weights (and skips a pass over ``resp``).
    resp : ndarray of shape (K, n)
        Responsibilities; overwritten with ``sample_weight * resp``.
    covariance_type : str
        "full" keeps ``sum_xx`` as packed upper triangles (K, d (d + 1) / 2), cheaper to
        accumulate. "tied" leaves it at zero: the responsibilities sum to one, so the
        pooled second moment does not depend on them and is computed once
        (:func:`weighted_second_moment`).
    n_features : int
    """
    if sample_weight is not None:
        resp *= sample_weight
    total = float(feats.shape[0] if sample_weight is None else sample_weight.sum())
    return statistics_from_moments(
        resp.sum(axis=1), resp @ feats, covariance_type, n_features, total
    )


def statistics_from_moments(weight, moments, covariance_type, n_features, total_weight):
    """:class:`SufficientStatistics` (log-likelihood 0) from the responsibilities' sums
    ``weight`` (K,) and moments ``resp @ features`` (K, m), in :func:`summarize`'s shapes.

    Zero ``weight`` and ``moments`` give the statistics of no responsibilities (the last
    E-step of a run wants only the log-likelihood and total weight).
    """
    d = n_features
    sum_xx = get_layout(covariance_type).second_moments(moments[:, d:], d)
    return SufficientStatistics(weight, moments[:, :d], sum_xx, total_weight, 0.0)


def finish_moments(stats, covariance_type, tied_moment=None):
    """Turn accumulated chunk statistics into what :func:`from_summaries` reads.

    Unpacks the "full" second moments into (K, d, d) matrices and puts the pooled
    ``tied_moment`` (:func:`weighted_second_moment`) in place for "tied".
    """
    layout = get_layout(covariance_type)
    stats.sum_xx = layout.finish_second_moments(stats.sum_xx, stats.sum_x.shape[1], tied_moment)
    return stats


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
    #: The "full" layout's ``ResolvedPrior.map_terms``: the prior's counts and scatter.
    map_terms: tuple | None = None

    @classmethod
    def from_resolved(cls, resolved, center):
        """The hyperparameters of ``resolved`` with the prior mean shifted by ``-center``."""
        return cls(
            alpha=resolved.weight_concentration,
            kappa=resolved.mean_precision,
            mean=resolved.mean - center,
            nu=resolved.degrees_of_freedom,
            scale=resolved.scale,
            map_terms=resolved.map_terms,
        )


def from_summaries(stats, covariance_type, reg_covar, prior=None, previous=None):
    """M-step: weights, means and covariances that maximize the expected objective.

    Under a prior (``CenteredPrior``) the closed-form MAP update of the conjugate
    Dirichlet x Normal-inverse-Wishart model is used and ``reg_covar`` is not added:
    the prior's scale already keeps every covariance positive definite, and adding
    anything would break the monotone increase of the log-posterior.

    The models stored in the "full" layout (VVV and mclust's other ten) share one update:
    the posterior scatter ``W_k + prior_scatter[k] + kappa n_k / (kappa + n_k) (xbar_k -
    m0)(xbar_k - m0)'`` and counts ``n_k + prior_counts[k]`` (``Structure.map_prior_terms``;
    without a prior ``W_k`` and ``n_k``). VVV's covariances are their ratio (plus
    ``reg_covar`` without a prior); the other models' come from
    ``Structure.covariances_from_scatter``, which starts its inner iterations at
    ``previous`` (the current (K, d, d) covariances) and gets no ``reg_covar`` (as in
    mclust), so that they keep their structure. Where a component collapsed (a singular
    scatter the model cannot use) the unconstrained covariances are returned, for the
    caller's repair and warning.

    Returns
    -------
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
        Centered frame.
    covariances : ndarray
    """
    structure = get_structure(covariance_type)
    layout = structure.storage
    if prior is None:
        weights, means, scatter, counts = maximum_likelihood_terms(stats, covariance_type)
        covariances = covariances_from_terms(scatter, counts, covariance_type, reg_covar, previous)
        return weights, means, covariances
    nk, xbar, scatter = _scatter(stats, layout)
    K = len(nk)
    alpha, kappa = prior.alpha, prior.kappa
    weights = (stats.weight + alpha - 1.0) / (stats.total_weight + K * (alpha - 1.0))
    means = (stats.sum_x + kappa * prior.mean) / (stats.weight + kappa)[:, None]
    shrink = kappa * stats.weight / (kappa + stats.weight)
    delta = xbar - prior.mean
    scatter, counts = layout.map_posterior(
        scatter, shrink, delta, prior, stats.weight, stats.total_weight
    )
    return weights, means, covariances_from_terms(scatter, counts, covariance_type, None, previous)


#: scikit-learn adds this to the components' weights so that an empty one does not divide
#: by zero (a constant: ``np.finfo`` costs a microsecond per call).
_WEIGHT_GUARD = 10 * np.finfo(float).eps


def _scatter(stats, layout):
    nk = stats.weight + _WEIGHT_GUARD
    xbar = stats.sum_x / nk[:, None]
    return nk, xbar, layout.scatter(stats.sum_xx, nk, xbar)


def maximum_likelihood_terms(stats, covariance_type):
    """:func:`from_summaries`'s maximum-likelihood weights, means, scatter and counts.

    They depend only on the storage layout, so that a caller that needs the M-step of
    several structures of one layout from the same statistics (a selection grid's starts)
    computes them once and calls :func:`covariances_from_terms` per structure (which does
    not modify them).
    """
    layout = get_structure(covariance_type).storage
    nk, xbar, scatter = _scatter(stats, layout)
    return nk / stats.total_weight, xbar, scatter, layout.ml_counts(nk, xbar.shape[1])


def covariances_from_terms(scatter, counts, covariance_type, reg_covar, previous=None):
    """:func:`from_summaries`'s covariances from the scatter and counts (maximum likelihood,
    or the MAP posterior's with ``reg_covar`` None)."""
    structure = get_structure(covariance_type)
    layout = structure.storage
    if not structure.is_sklearn:
        covariances = structure.covariances_from_scatter(scatter, counts, previous)
        if covariances is None:
            # Collapsed: the unconstrained estimate, repaired and warned about by
            # precision_cholesky.
            covariances = layout.divide(scatter, counts)
        return covariances
    covariances = layout.divide(scatter, counts)
    if reg_covar is not None:
        layout.add_to_diagonal(covariances, reg_covar)
    return covariances


def full_covariances(covariances, covariance_type, n_components, n_features):
    """(..., K, d, d) covariance matrices from a covariance array of any type.

    Parameters
    ----------
    covariances : array-like
        scikit-learn shapes with any leading batch: (..., K, d, d) full, (..., d, d)
        tied, (..., K, d) diag, (..., K) spherical.
    covariance_type : {"full", "tied", "diag", "spherical"}
    n_components, n_features : int

    Returns
    -------
    ndarray of shape (..., n_components, n_features, n_features)
        A new array except for "full", which returns ``covariances`` as a float array.
    """
    return get_layout(covariance_type).to_full(covariances, n_components, n_features)
