"""Where the selection grid's EM runs start (:func:`bayes_gmm.select_model`).

The grid's data (:class:`GridData`: the rows centered, their features per storage layout),
the seeds (which depend on the run's entropy and the start, not on the grid's order), the
partitions every structure at a K starts from (k-means, k-means++ and mclust's
hierarchical start, :class:`SharedStarts`), and the starts made from other cells'
solutions: the split of the K - 1 solution and the conversion of a nested model's.
"""

from __future__ import annotations

import functools
import numbers
import threading
from dataclasses import dataclass, field

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm import _hc
from bayes_gmm.structures import MCLUST_MODELS, get_layout, get_structure, layout_of


def seed_entropy(random_state):
    if random_state is None:
        return np.random.SeedSequence().entropy
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2**63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2**31))
    raise ValueError(
        f"random_state must be None, an int, a numpy Generator or RandomState, got "
        f"{random_state!r}."
    )


def seed(entropy, *key):
    """A 32-bit seed that depends only on the run's entropy and ``key`` (not on grid order)."""
    return int(np.random.SeedSequence(entropy, spawn_key=key).generate_state(1)[0])


# --------------------------------------------------------------------------- starts
@dataclass
class GridData:
    """Validated data, weights, and the rows centered (for the starts' moments)."""

    X: np.ndarray
    w: np.ndarray
    center: np.ndarray
    Xc: np.ndarray
    reg_covar: float
    _features: dict = field(default_factory=dict, repr=False)

    # Computed on first use. Cells on two threads may both compute one: the same value.
    @functools.cached_property
    def data_scale(self):
        """The largest column variance (``GaussianMixture``'s scale for degeneracy checks)."""
        return float(np.max(np.var(self.X, axis=0))) or 1.0

    @functools.cached_property
    def tied_moment(self):
        """``_gaussian.weighted_second_moment(Xc, w)`` (the "tied" layout's pooled moment)."""
        return g.weighted_second_moment(self.Xc, self.w)

    @functools.cached_property
    def unit_weights(self):
        """Whether every weight is 1 (the moments of a partition then skip the weights)."""
        return bool(np.all(self.w == 1.0))

    def features_t(self, covariance_type):
        """``features(Xc)`` of a structure's layout, transposed (m, n), computed once."""
        layout = layout_of(covariance_type)
        if layout not in self._features:
            self._features[layout] = np.ascontiguousarray(g.features(self.Xc, layout).T)
        return self._features[layout]


def make_data(X, w, reg_covar):
    center = w @ X / w.sum()
    return GridData(X, w, center, X - center, reg_covar)


def hc_tree(data, entropy, ks):
    """mclust's hierarchical start (:mod:`bayes_gmm._hc`) on the rows with positive weight.

    Returns the data the tree was built on (a subset of at most ``_hc.SUBSET_SIZE`` rows,
    centered as ``data``) and ``{K: labels}``; the tree ignores sample weights (as mclust
    has none).
    """
    positive = np.flatnonzero(data.w > 0)
    rng = np.random.default_rng(seed(entropy, 0, 0, 2))
    rows, labels = _hc.hc_partitions(data.X[positive], ks, rng)
    rows = positive[rows]
    subset = GridData(data.X[rows], data.w[rows], data.center, data.Xc[rows], data.reg_covar)
    return subset, labels


_thread_random_state = threading.local()


def _random_state(seed):
    """This thread's ``RandomState``, reseeded with ``seed``: the same draws as a new one
    from that seed, without the ~0.1 ms a new one costs in drawing its own entropy first."""
    rng = getattr(_thread_random_state, "rng", None)
    if rng is None:
        rng = _thread_random_state.rng = np.random.RandomState()
    rng.seed(seed)
    return rng


def partitions(data, K, n_init, entropy):
    """``n_init`` hard partitions for K components, shared by every covariance structure."""
    X, w = data.X, data.w
    out = []
    for r in range(n_init):
        rng = _random_state(seed(entropy, K, r))
        if r == 0:
            # As scikit-learn's KMeans(n_init=1), which also centers the rows first.
            Xm = X - X.mean(axis=0)
            out.append(("kmeans", lloyd(Xm, w, kmeans_plusplus(Xm, w, K, rng))))
        else:
            out.append(("kmeans++", _nearest(X, kmeans_plusplus(X, w, K, rng))))
    return out


# scikit-learn's KMeans and kmeans_plusplus, without their per-call validation and thread
# set-up, which cost ten times the arithmetic on data of a few hundred rows (most of the
# starts' time on Old Faithful). Same algorithms and random draws, so the same partitions.
def _squared_distances(X, rows, sq_norms):
    """(len(rows), n) squared distances from the rows ``rows`` of X to every row."""
    dist = -2.0 * (X[rows] @ X.T)
    dist += sq_norms[rows, None]
    dist += sq_norms
    return np.maximum(dist, 0.0, out=dist)


def kmeans_plusplus(X, w, K, rng):
    """Greedy k-means++ seeds (``sklearn.cluster.kmeans_plusplus``): (K, d) centers."""
    n = X.shape[0]
    n_trials = 2 + int(np.log(K))
    sq_norms = np.einsum("ij,ij->i", X, X)
    chosen = [rng.choice(n, p=w / w.sum())]
    closest = _squared_distances(X, chosen, sq_norms)[0]
    potential = closest @ w
    for _ in range(1, K):
        candidates = np.searchsorted(np.cumsum(w * closest), rng.uniform(size=n_trials) * potential)
        np.minimum(candidates, n - 1, out=candidates)  # np.clip's checks cost 4x more
        dist = np.minimum(closest, _squared_distances(X, candidates, sq_norms))
        potentials = dist @ w
        best = int(np.argmin(potentials))
        potential, closest = potentials[best], dist[best]
        chosen.append(candidates[best])
    return X[chosen]


def _nearest(X, centers):
    """Index of the nearest center of each row (``||x||^2`` is the same for all centers)."""
    return (np.square(centers).sum(axis=1) - 2.0 * (X @ centers.T)).argmin(axis=1)


def lloyd(X, w, centers, max_iter=300, tol=1e-4):
    """Lloyd's k-means from ``centers`` (``sklearn.cluster.KMeans``, algorithm "lloyd").

    Stops when the labels repeat or the centers move by less than ``tol`` times the mean
    variance of the columns; an emptied cluster is moved to the row farthest from its
    center, as scikit-learn does. Returns the labels of the final centers.
    """
    K = centers.shape[0]
    n = X.shape[0]
    tol = float(np.mean(np.var(X, axis=0))) * tol
    labels_old = None
    strict = False
    for _ in range(max_iter):
        labels = _nearest(X, centers)
        members = np.zeros((K, n))
        members[labels, np.arange(n)] = w
        sums, totals = members @ X, members.sum(axis=1)
        empty = np.flatnonzero(totals == 0)
        if empty.size:
            far = np.argsort(-np.square(X - centers[labels]).sum(axis=1), kind="stable")
            for k, row in zip(empty, far[: empty.size], strict=False):
                sums[labels[row]] -= w[row] * X[row]
                totals[labels[row]] -= w[row]
                sums[k], totals[k] = w[row] * X[row], w[row]
        new = sums / totals[:, None]
        shift = float(np.square(new - centers).sum())
        centers = new
        if labels_old is not None and np.array_equal(labels, labels_old):
            strict = True
            break
        if shift <= tol:
            break
        labels_old = labels
    return labels if strict else _nearest(X, centers)


def params_from_labels(data, labels, K, ctype, moments=None):
    """Weights, centered means and covariances of the clusters of a hard partition.

    One maximum-likelihood M-step (with ``reg_covar``) from hard responsibilities. Returns
    None when a cluster is empty (not a usable start). ``moments``, a dict kept with the
    partition, holds per storage layout what every structure of that layout shares: the
    M-step's weights, means, scatter and counts (``_gaussian.maximum_likelihood_terms``).
    """
    layout = get_layout(ctype)
    terms = None if moments is None else moments.get(layout.name)
    if terms is None:
        Xc, w = data.Xc, data.w
        n, d = Xc.shape
        if np.any(np.bincount(labels, weights=w, minlength=K) <= 0):
            terms = "empty"
        else:
            resp = np.zeros((K, n))
            resp[labels, np.arange(n)] = 1.0
            # Unit weights as None: the same sums (times 1 and the row count are exact).
            weights = None if data.unit_weights else w
            stats = g.summarize(data.features_t(ctype).T, weights, resp, ctype, d)
            g.finish_moments(stats, ctype, data.tied_moment if layout.shared else None)
            terms = g.maximum_likelihood_terms(stats, ctype)
        if moments is not None:  # complete before it is stored: other threads read it
            moments[layout.name] = terms
    if isinstance(terms, str):
        return None
    weights, means, scatter, counts = terms
    return weights, means, g.covariances_from_terms(scatter, counts, ctype, data.reg_covar)


def split_start(data, parent, ctype):
    """K components from a K - 1 solution: split one component along its principal axis.

    ``parent`` is the K - 1 cell's :class:`Parent`. The split component's two halves
    keep its covariance and half its weight each; their means sit half a standard
    deviation on either side along the component's principal axis in the data (weighted
    by its responsibilities, which works for every structure, "spherical" included).
    Returns centered (weights, means, covariances).
    """
    j = parent.index
    w = data.w * parent.resp_top
    nk = w.sum()
    if not nk > 0:
        return None
    mean_j = parent.means[j]
    diff = data.Xc - mean_j
    evals, evecs = np.linalg.eigh((diff * w[:, None]).T @ diff / nk)
    if not evals[-1] > 0:
        return None
    shift = 0.5 * np.sqrt(evals[-1]) * evecs[:, -1]
    order = _split_order(len(parent.weights), j)
    weights = parent.weights[order]
    weights[-2:] /= 2
    means = parent.means[order]
    means[-2], means[-1] = mean_j - shift, mean_j + shift
    covs = parent.covariances
    if not get_structure(ctype).shares_covariance:
        covs = covs[order]
    return weights, means, covs


@functools.cache
def _split_order(K, j):
    """The K - 1 components in the order of a split start: ``j`` last, twice."""
    order = np.concatenate([np.arange(j), np.arange(j + 1, K), [j, j]])
    order.flags.writeable = False  # shared by every split with these K and j
    return order


def nesting_order(types):
    """mclust's order (by number of parameters), so that each model comes after the
    models nested in it and can start from their solutions."""
    return sorted(types, key=lambda t: MCLUST_MODELS.index(get_structure(t).name))


def conversion_sources(fit_order, ctype, K, parents):
    """The fitted structures at the same K that ``ctype`` starts from.

    scikit-learn's four start from each other as they always did (each from those
    before it); any other pair only from the nested model with the highest objective
    (with 14 models, every source would multiply the starts).
    """
    pairs, nested = possible_sources(tuple(fit_order), ctype)
    out = [o for o in pairs if (o, K) in parents]
    nested = [o for o in nested if (o, K) in parents]
    if nested:
        out.append(max(nested, key=lambda o: parents[(o, K)].objective))
    return out


@functools.cache
def possible_sources(fit_order, ctype):
    """:func:`conversion_sources` before knowing which cells were fitted: the structures
    fitted before ``ctype`` that it starts from (scikit-learn pairs) and those nested in it."""
    before = fit_order[: fit_order.index(ctype)]
    target = get_structure(ctype)
    pairs = [o for o in before if target.is_sklearn and get_structure(o).is_sklearn]
    nested = [
        o
        for o in before
        if o not in pairs and target.nests(get_structure(o)) and get_structure(o) != target
    ]
    return pairs, nested


def convert_start(parent, source, target):
    """A start for structure ``target`` from a solution of structure ``source``, same K.

    The target's M-step from the source's covariances
    (:meth:`~bayes_gmm.structures.Structure.covariances_from_full`): when the source is
    nested in the target, the start is at least as good as the source.
    """
    K, d = parent.means.shape
    full = g.full_covariances(parent.covariances, source, K, d)
    covs = get_structure(target).covariances_from_full(full, parent.weights)
    return None if covs is None else (parent.weights, parent.means, covs)


@dataclass
class Parent:
    """What the starts of later cells need from an explored cell (centered frame)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    index: int  # the component to split
    resp_top: np.ndarray  # its responsibilities on the exploration data
    objective: float  # on the exploration data

    @classmethod
    def from_estimator(cls, est, data, ctype, resp=None):
        """``resp``: ``est``'s responsibilities on ``data.X``, when the caller has them."""
        d = est.means_.shape[1]
        # The component with the largest weight x det(covariance); log det(covariance) is
        # -2 log det of the precision factor.
        logdet = -2.0 * g.log_det_precision_cholesky(est.precisions_cholesky_, ctype, d)
        j = int(np.argmax(np.log(est.weights_) + logdet))
        if resp is None:
            resp = est._log_norm_and_resp(data.X)[1]
        resp = resp[:, j].copy()
        return cls(
            est.weights_.copy(),
            est.means_ - data.center,
            est.covariances_.copy(),
            j,
            resp,
            est.log_likelihood_,
        )


class SharedStarts:
    """The partitions that every structure at a K starts from, made once per K by the
    first cell that needs them (cells may run on several threads)."""

    def __init__(self, sub, ks, settings):
        self._sub, self._ks, self._settings = sub, ks, settings
        self._locks = {K: threading.Lock() for K in ks}
        self._by_k = {}
        self._hc_lock = threading.Lock()
        self._hc = None

    def partitions(self, K):
        """``[(kind, data, labels, moments)]``: k-means, k-means++ and mclust's hc."""
        with self._locks[K]:
            if K not in self._by_k:
                s = self._settings
                n_init = 1 if K == 1 else s["n_init"]
                parts = [
                    (kind, self._sub, labels, {})
                    for kind, labels in partitions(self._sub, K, n_init, s["entropy"])
                ]
                if K > 1:
                    hc_data, hc_labels = self._tree()
                    if K in hc_labels:
                        parts.append(("hc", hc_data, hc_labels[K], {}))
                self._by_k[K] = parts
            return self._by_k[K]

    def _tree(self):
        with self._hc_lock:  # one tree for every K, as mclust
            if self._hc is None:
                self._hc = hc_tree(self._sub, self._settings["entropy"], self._ks)
            return self._hc
