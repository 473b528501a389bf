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
    Z = np.ascontiguousarray(Z, dtype=float)
    n, d = Z.shape
    alpha = max(float(np.sum((Z - Z.mean(axis=0)) ** 2)) / (n * d), np.finfo(float).eps)
    # Imported here: numba is paid for only by programs that run a selection grid.
    from bayes_gmm._hc_kernel import merge_tree as compiled

    return compiled(Z, alpha)


def cut(merges, n_clusters):
    """Labels 0..n_clusters-1 of the rows, the tree (:func:`merge_tree`) cut at
    ``n_clusters`` clusters."""
    n = len(merges) + 1
    parent = list(range(n))  # a list: numpy's element access costs ten times more here
    for i, j in merges[: n - n_clusters].tolist():
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
