"""Label switching: relabel posterior draws to a pivot (the EM estimate).

Stage 2 of the Bayesian pipeline. The likelihood of a mixture is invariant
under permutations of the components, so a chain may visit a permuted copy of
the mode; summaries per component are then meaningless. The "pivot" method
(Marin, Mengersen & Robert 2005) maps every draw to the permutation that makes
it closest to a fixed reference, here the EM/MAP estimate, solving one small
assignment problem per draw (Hungarian algorithm).

The distance between draw component ``j`` and pivot component ``k`` is the
Kullback-Leibler divergence ``KL(N(mu_j, Sigma_j) || N(mu_k^*, Sigma_k^*))``:
it separates components that differ in location *or* shape, and it is
invariant to rescaling the features.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy.optimize import linear_sum_assignment

from bayes_gmm._gaussian import log_det_precision_cholesky

__all__ = ["apply_permutations", "kl_cost", "pivot_permutations", "relabel_posterior"]


def kl_cost(means, covariances, pivot_means, pivot_prec_chol):
    """KL divergence of every draw component to every pivot component.

    Parameters
    ----------
    means : ndarray of shape (S, K, d)
    covariances : ndarray of shape (S, K, d, d)
    pivot_means : ndarray of shape (K, d)
    pivot_prec_chol : ndarray of shape (K, d, d)
        Lower Cholesky factors of the pivot precisions.

    Returns
    -------
    ndarray of shape (S, K, K)
        ``cost[s, j, k]`` = KL(draw component j || pivot component k).
    """
    d = means.shape[-1]
    P = pivot_prec_chol @ np.swapaxes(pivot_prec_chol, -1, -2)  # (K, d, d)
    trace = np.einsum("kab,sjab->sjk", P, covariances)
    diff = means[:, :, None, :] - pivot_means[None, None]  # (S, j, k, d)
    z = np.einsum("sjka,kab->sjkb", diff, pivot_prec_chol)
    maha = np.sum(z**2, axis=-1)
    logdet_pivot = -2.0 * log_det_precision_cholesky(pivot_prec_chol, "full", d)
    _, logdet_draw = np.linalg.slogdet(covariances)  # (S, j)
    return 0.5 * (trace + maha - d + logdet_pivot[None, None, :] - logdet_draw[:, :, None])


def pivot_permutations(cost):
    """The label permutation of each draw that minimizes the total cost.

    Parameters
    ----------
    cost : ndarray of shape (S, K, K)
        ``cost[s, j, k]``: cost of calling draw component ``j`` component ``k``.

    Returns
    -------
    ndarray of shape (S, K), int
        ``perm[s, k]`` is the draw component that becomes component ``k``.
    """
    S, K, _ = cost.shape
    if K == 1:
        return np.zeros((S, 1), dtype=np.intp)
    if K <= 6:
        # All K! permutations at once: cheaper than S Python-level assignment calls.
        perms = np.array(list(itertools.permutations(range(K))), dtype=np.intp)  # (P, K)
        total = cost[:, perms, np.arange(K)].sum(axis=-1)  # (S, P)
        return perms[np.argmin(total, axis=1)]
    out = np.empty((S, K), dtype=np.intp)
    for s in range(S):
        rows, cols = linear_sum_assignment(cost[s])
        out[s, cols] = rows
    return out


def apply_permutations(array, perm, axis):
    """Reorder the component axis of ``array`` draw by draw.

    Parameters
    ----------
    array : ndarray of shape (S, ..., K, ...)
        Leading axis: draws (flattened chains x draws).
    perm : ndarray of shape (S, K)
    axis : int
        Position of the component axis in ``array``.

    Returns
    -------
    ndarray, same shape as ``array``
    """
    index_shape = [1] * array.ndim
    index_shape[0] = perm.shape[0]
    index_shape[axis] = perm.shape[1]
    return np.take_along_axis(array, perm.reshape(index_shape), axis=axis)


def relabel_posterior(posterior, dims, pivot_means, pivot_prec_chol, component="component"):
    """Permute every component-indexed variable of each draw to match the pivot.

    The permutation of a draw is found from its ``means`` and ``precisions_cholesky``
    (:func:`kl_cost`, :func:`pivot_permutations`) and applied to *every* variable with
    a ``component`` dimension, so the draws stay consistent: the model's own random
    variables, the Deterministics and anything a user added per component.

    Parameters
    ----------
    posterior : dict of str -> ndarray
        Draws shaped (chain, draw, ...); needs ``means`` (..., K, d) and
        ``precisions_cholesky`` (..., K, d, d).
    dims : dict of str -> tuple of str
        Each variable's dims after (chain, draw).
    pivot_means : ndarray of shape (K, d)
    pivot_prec_chol : ndarray of shape (K, d, d)
    component : str, default="component"

    Returns
    -------
    posterior : dict of str -> ndarray
        Relabelled copies (variables without a component dimension are kept).
    relabelled : ndarray of shape (chain,)
        Number of draws of each chain whose labels changed.
    """
    means = np.asarray(posterior["means"], dtype=float)
    C, S, K, d = means.shape
    U = np.asarray(posterior["precisions_cholesky"], dtype=float).reshape(C * S, K, d, d)
    U_inv = np.linalg.solve(U, np.broadcast_to(np.eye(d), U.shape))
    covs = np.swapaxes(U_inv, -1, -2) @ U_inv
    perm = pivot_permutations(
        kl_cost(means.reshape(C * S, K, d), covs, pivot_means, pivot_prec_chol)
    )
    moved = np.any(perm != np.arange(K), axis=1).reshape(C, S)
    out = {}
    for name, values in posterior.items():
        var_dims = tuple(dims.get(name, ()))
        if component not in var_dims:
            out[name] = values
            continue
        axis = 1 + var_dims.index(component)
        flat = np.asarray(values).reshape(C * S, *np.shape(values)[2:])
        out[name] = apply_permutations(flat, perm, axis).reshape(np.shape(values))
    return out, moved.sum(axis=1)
