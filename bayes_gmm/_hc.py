"""mclust's default start: model-based hierarchical agglomeration (VVV) on SVD-scaled data.

mclust starts every model and number of components from one tree: agglomerative
clustering that merges, at each step, the two clusters whose union costs the least
classification likelihood under unconstrained (VVV) Gaussian clusters (Banfield & Raftery
1993; Fraley 1998), on the data transformed as ``hcUse = "SVD"`` (columns standardized,
rotated onto their singular vectors and scaled by the inverse square roots of the singular
values), and on a random subset of at most ``SUBSET_SIZE`` rows. The tree is cut at each K.

A VVV cluster of fewer than d + 1 points has a singular scatter matrix; mclust's
``hcVVV`` regularizes with its ``alpha`` (the total variance per coordinate of the
transformed data). The criterion used here, a cluster ``C`` costing
``n_C log((tr(W_C) + alpha) / n_C)`` with two clusters merging where the total rises least,
exact ties broken towards the last pair, reproduces mclust 6's ``hclass(hc(X), 1:9)`` on
iris exactly and on Old Faithful for K <= 5 (tests/test_selection.py); beyond, a few of
faithful's rows differ, where its rounded values tie merge costs up to rounding. It is our
reconstruction from mclust's results, not a port of its Fortran.
"""

from __future__ import annotations

import numpy as np

#: mclust's default ``subset`` (``mclust.options("subset")``).
SUBSET_SIZE = 2000


def svd_transform(X):
    """mclust's ``hcUse = "SVD"``: standardized columns, rotated and scaled by the SVD.

    Constant columns are dropped (as mclust's ``dropCols``).
    """
    X = np.asarray(X, dtype=float)
    sd = X.std(axis=0, ddof=1) if X.shape[0] > 1 else np.ones(X.shape[1])
    keep = sd > 0
    Z = (X[:, keep] - X[:, keep].mean(axis=0)) / sd[keep]
    if Z.shape[1] == 0:
        return np.zeros((X.shape[0], 1))
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    s = np.where(s > s[0] * 1e-12, s, np.inf)  # a rank-deficient direction becomes 0
    return Z @ vt.T / np.sqrt(s)


def _last_argmin(values):
    """Index of the last minimum (mclust breaks exact ties, e.g. duplicated rows, so)."""
    return len(values) - 1 - int(np.argmin(values[::-1]))


def merge_tree(Z):
    """The sequence of merges of mclust's hierarchical agglomeration, down to one cluster.

    Parameters
    ----------
    Z : ndarray of shape (n, d)
        Transformed rows (:func:`svd_transform`).

    Returns
    -------
    merges : ndarray of shape (n - 1, 2)
        At step ``s`` cluster ``merges[s, 1]`` joins cluster ``merges[s, 0]``, the smaller
        index, which names the union (as mclust's ``hc`` reports them, from 0 here).
    """
    n, d = Z.shape
    alpha = max(float(np.sum((Z - Z.mean(axis=0)) ** 2)) / (n * d), np.finfo(float).eps)
    counts = np.ones(n)
    means = Z.copy()
    trace = np.zeros(n)  # tr(W) of each cluster
    own = np.full(n, np.log(alpha))  # a singleton's cost
    # lower[j, i], i < j: how much merging clusters i and j raises the criterion.
    sq = np.einsum("ij,ij->i", Z, Z)
    r2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * Z @ Z.T, 0.0)
    lower = 2.0 * np.log((r2 / 2.0 + alpha) / 2.0) - 2.0 * np.log(alpha)
    lower[np.triu_indices(n)] = np.inf
    # Exact ties (duplicated rows) are broken as mclust does: the last pair in the order
    # (j, then i) wins.
    best = np.zeros(n, dtype=np.int64)
    best_cost = np.full(n, np.inf)
    for j in range(1, n):
        best[j] = _last_argmin(lower[j, :j])
        best_cost[j] = lower[j, best[j]]
    active = np.ones(n, dtype=bool)
    merges = np.empty((max(n - 1, 0), 2), dtype=np.int64)
    for step in range(n - 1):
        j = _last_argmin(best_cost)
        i = int(best[j])
        merges[step] = (i, j)
        ni, nj = counts[i], counts[j]
        delta = means[i] - means[j]
        trace[i] += trace[j] + ni * nj / (ni + nj) * float(delta @ delta)
        means[i] = (ni * means[i] + nj * means[j]) / (ni + nj)
        counts[i] = ni + nj
        own[i] = counts[i] * np.log((trace[i] + alpha) / counts[i])
        active[j] = False
        lower[j, :] = np.inf
        lower[:, j] = np.inf
        best_cost[j] = np.inf
        others = np.flatnonzero(active)
        others = others[others != i]
        if others.size:
            nl = counts[others]
            diff = means[others] - means[i]
            total = nl + counts[i]
            tr = (
                trace[others]
                + trace[i]
                + nl * counts[i] / total * np.einsum("ij,ij->i", diff, diff)
            )
            row = total * np.log((tr + alpha) / total) - own[others] - own[i]
            below, above = others < i, others > i
            lower[i, others[below]] = row[below]
            lower[others[above], i] = row[above]
        if i > 0:
            best[i] = _last_argmin(lower[i, :i])
            best_cost[i] = lower[i, best[i]]
        # Rows after i: their entry for i changed, and rows that pointed at i or j look again.
        after = others[others > i]
        stale = (best[after] == i) | (best[after] == j)
        for k in after[stale]:
            best[k] = _last_argmin(lower[k, :k])
            best_cost[k] = lower[k, best[k]]
        fresh = after[~stale]
        value = lower[fresh, i]
        wins = (value < best_cost[fresh]) | ((value == best_cost[fresh]) & (i > best[fresh]))
        best[fresh[wins]] = i
        best_cost[fresh[wins]] = value[wins]
    return merges


def cut(merges, n_clusters):
    """Labels 0..n_clusters-1 of the rows, the tree (:func:`merge_tree`) cut at
    ``n_clusters`` clusters."""
    n = len(merges) + 1
    parent = np.arange(n)
    for i, j in merges[: n - n_clusters]:
        parent[j] = i

    def root(k):
        while parent[k] != k:
            parent[k] = parent[parent[k]]
            k = parent[k]
        return k

    roots = np.array([root(k) for k in range(n)])
    _, labels = np.unique(roots, return_inverse=True)
    return labels


def hc_partitions(X, ks, rng):
    """mclust's hc start: for each K in ``ks``, labels of a subset of rows.

    Returns
    -------
    rows : ndarray of int
        The rows of ``X`` the tree was built on (all when there are at most
        ``SUBSET_SIZE``).
    labels : dict
        ``{K: labels of those rows}`` for each K up to the number of rows.
    """
    n = X.shape[0]
    rows = np.arange(n) if n <= SUBSET_SIZE else np.sort(rng.choice(n, SUBSET_SIZE, replace=False))
    sub = X[rows]
    merges = merge_tree(svd_transform(sub))
    return rows, {K: cut(merges, K) for K in ks if K <= len(rows)}
