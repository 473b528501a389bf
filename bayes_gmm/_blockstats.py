"""The E-step of one block of rows, as a pure function of the block and the parameters.

The same code serves every place that sees the data a block at a time: the batches of
``partial_fit`` and the chunks of a Dask array (run on the workers). Its output,
:class:`~bayes_gmm._gaussian.SufficientStatistics` in the form ``from_summaries`` reads,
is additive over blocks, so a map-reduce of blocks is one EM pass.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm import _missing
from bayes_gmm.structures import get_layout, layout_of

__all__ = ["block_statistics", "log_norm_and_resp", "scale_statistics", "zero_statistics"]


def block_statistics(X, sample_weight, center, weights, means, prec_chol, covariances, ctype):
    """Sufficient statistics of the rows ``X`` at the given parameters (one E-step).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        Raw (uncentered) rows; NaN marks a missing value (then the E-step of
        :mod:`bayes_gmm._missing` is used for this block).
    sample_weight : ndarray of shape (n,) or None
    center : ndarray of shape (d,)
        The fixed frame the statistics and ``means`` are expressed in.
    weights, means, prec_chol, covariances
        Parameters, ``means`` centered by ``center``.
    ctype : str
        Any structure's name (scikit-learn's or mclust's).

    Returns
    -------
    SufficientStatistics
        Finished (``sum_xx`` in the shape ``from_summaries`` reads), with the weighted
        log-likelihood of the block. An empty block gives zeros.
    """
    X = np.asarray(X, dtype=np.float64)
    n, d = X.shape
    K = means.shape[0]
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    layout = layout_of(ctype)
    if n == 0:
        return zero_statistics(K, d, layout)
    Xc = X - center
    # One BLAS thread: blocks run in parallel (Dask workers), and threaded BLAS on these
    # small products spins against them (a block was 20x slower on a busy 2-core machine).
    with g.single_threaded():
        if np.isnan(Xc).any():
            return _missing.expected_statistics(Xc, w, weights, means, covariances, layout)
        return _complete_block_statistics(
            Xc, w, sample_weight is None, weights, means, prec_chol, ctype
        )


def _complete_block_statistics(Xc, w, unit, weights, means, prec_chol, ctype):
    n, d = Xc.shape
    K = means.shape[0]
    layout = layout_of(ctype)
    eta, const = g.natural_parameters(means, prec_chol, ctype)
    with np.errstate(divide="ignore"):
        const = const + np.log(weights)
    rows = g.chunk_rows(n, K, d, ctype)
    stats = None
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        feats = g.features(Xc[start:stop], ctype)
        log_norm, resp = g.normalize(g.linear_log_prob(feats, eta, const, ctype, prec_chol))
        wc = None if unit else w[start:stop]
        chunk = g.summarize(feats, wc, resp, ctype, d)
        chunk.log_likelihood = float(log_norm.sum() if unit else wc @ log_norm)
        if stats is None:
            stats = chunk
        else:
            stats += chunk
    tied = g.weighted_second_moment(Xc, w) if get_layout(layout).shared else None
    return g.finish_moments(stats, ctype, tied)


def zero_statistics(K, d, ctype):
    """Statistics of no rows (the identity of ``+=``)."""
    shape = get_layout(ctype).covariance_shape(K, d)
    return g.SufficientStatistics(np.zeros(K), np.zeros((K, d)), np.zeros(shape), 0.0, 0.0)


def scale_statistics(stats, factor):
    """A copy of ``stats`` with every sum multiplied by ``factor``."""
    return g.SufficientStatistics(
        stats.weight * factor,
        stats.sum_x * factor,
        stats.sum_xx * factor,
        stats.total_weight * factor,
        stats.log_likelihood * factor,
    )


def log_norm_and_resp(X, weights, means, prec_chol, covariances, ctype):
    """Per-row log-density of the mixture and the responsibilities of one block.

    ``means`` are in the data's frame; NaN rows use the observed-data density
    (:func:`bayes_gmm._missing.log_norm_and_resp`).

    Returns
    -------
    ndarray of shape (n, K + 1)
        Column 0 the log-density, columns 1: the responsibilities (one array, so that a
        Dask block computes both at once).
    """
    X = np.asarray(X, dtype=np.float64)
    weights, means, prec_chol, covariances = (
        np.asarray(a, dtype=np.float64) for a in (weights, means, prec_chol, covariances)
    )
    n, d = X.shape
    K = means.shape[0]
    out = np.empty((n, K + 1))
    if n == 0:
        return out
    if np.isnan(X).any():
        layout = layout_of(ctype)
        out[:, 0], out[:, 1:] = _missing.log_norm_and_resp(X, weights, means, covariances, layout)
        return out
    center = weights @ means
    eta, const = g.natural_parameters(means - center, prec_chol, ctype)
    with np.errstate(divide="ignore"):
        const = const + np.log(weights)
    rows = g.chunk_rows(n, K, d, ctype)
    with g.single_threaded():  # as in block_statistics
        for start in range(0, n, rows):
            stop = min(start + rows, n)
            feats = g.features(X[start:stop] - center, ctype)
            lp = g.linear_log_prob(feats, eta, const, ctype, prec_chol)
            out[start:stop, 0], resp = g.normalize(lp)
            out[start:stop, 1:] = resp.T
    return out
