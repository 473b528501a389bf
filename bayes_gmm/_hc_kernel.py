"""Compiled loop of mclust's hierarchical agglomeration (see :mod:`bayes_gmm._hc`).

n merge steps, each updating O(n) merge costs: in numpy each step cost about 25 small array
calls (50 ms on Old Faithful's 272 rows, 13% of its 14-model grid); compiled, 1 ms.
"""

from __future__ import annotations

import math

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def _last_argmin(values, stop):
    """Index of the last minimum of ``values[:stop]`` (mclust breaks exact ties, e.g.
    duplicated rows, towards the last pair)."""
    best = 0
    for k in range(1, stop):
        if values[k] <= values[best]:
            best = k
    return best


@numba.njit(cache=True, nogil=True)
def merge_tree(Z, alpha):
    """:func:`bayes_gmm._hc.merge_tree` on transformed rows ``Z`` with mclust's ``alpha``."""
    n, d = Z.shape
    counts = np.ones(n)
    means = Z.copy()
    trace = np.zeros(n)  # tr(W) of each cluster
    own = np.full(n, math.log(alpha))  # a singleton's cost
    # lower[j, i], i < j: how much merging clusters i and j raises the criterion.
    lower = np.full((n, n), np.inf)
    for j in range(1, n):
        for i in range(j):
            r2 = 0.0
            for a in range(d):
                r2 += (Z[i, a] - Z[j, a]) ** 2
            lower[j, i] = 2.0 * math.log((r2 / 2.0 + alpha) / 2.0) - 2.0 * math.log(alpha)
    # Exact ties (duplicated rows) are broken as mclust does: the last pair in the order
    # (j, then i) wins.
    best = np.zeros(n, dtype=np.int64)
    best_cost = np.full(n, np.inf)
    for j in range(1, n):
        best[j] = _last_argmin(lower[j], j)
        best_cost[j] = lower[j, best[j]]
    active = np.ones(n, dtype=np.bool_)
    merges = np.empty((max(n - 1, 0), 2), dtype=np.int64)
    for step in range(n - 1):
        j = _last_argmin(best_cost, n)
        i = best[j]
        merges[step, 0] = i
        merges[step, 1] = j
        ni, nj = counts[i], counts[j]
        dd = 0.0
        for a in range(d):
            dd += (means[i, a] - means[j, a]) ** 2
        trace[i] += trace[j] + ni * nj / (ni + nj) * dd
        for a in range(d):
            means[i, a] = (ni * means[i, a] + nj * means[j, a]) / (ni + nj)
        counts[i] = ni + nj
        own[i] = counts[i] * math.log((trace[i] + alpha) / counts[i])
        active[j] = False
        for k in range(n):
            lower[j, k] = np.inf
            lower[k, j] = np.inf
        best_cost[j] = np.inf
        for k in range(n):
            if not active[k] or k == i:
                continue
            dd = 0.0
            for a in range(d):
                dd += (means[k, a] - means[i, a]) ** 2
            total = counts[k] + counts[i]
            tr = trace[k] + trace[i] + counts[k] * counts[i] / total * dd
            cost = total * math.log((tr + alpha) / total) - own[k] - own[i]
            if k < i:
                lower[i, k] = cost
            else:
                lower[k, i] = cost
        if i > 0:
            best[i] = _last_argmin(lower[i], i)
            best_cost[i] = lower[i, best[i]]
        # Rows after i: their entry for i changed, and rows that pointed at i or j look again.
        for k in range(i + 1, n):
            if not active[k]:
                continue
            if best[k] == i or best[k] == j:
                best[k] = _last_argmin(lower[k], k)
                best_cost[k] = lower[k, best[k]]
            else:
                value = lower[k, i]
                if value < best_cost[k] or (value == best_cost[k] and i > best[k]):
                    best[k] = i
                    best_cost[k] = value
    return merges
