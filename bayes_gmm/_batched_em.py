"""EM for several starts of the same mixture, on the same (small) data, in compiled code.

On small data (a few thousand rows) one EM iteration of :class:`~bayes_gmm.GaussianMixture`
costs mostly the fixed overhead of its few dozen numpy calls, not arithmetic. A
model-selection grid runs hundreds of starts of thousands of iterations, so that overhead is
its running time. Here the starts of one (K, covariance_type) run in a numba kernel
(:mod:`bayes_gmm._em_kernel`), one call for all of them.

The semantics are those of ``GaussianMixture._run_em`` (same inputs, same convergence rule,
same objective, same M-step), so a start ends at the parameters, objective and iteration
count that ``GaussianMixture(...).fit`` reaches from the same initial parameters (up to
rounding: the kernel adds in another order than numpy). The rare degenerate cases (a
component losing its weight, a covariance that is not numerically positive definite, a
singular maximum-likelihood covariance) are not reproduced here: such a start is flagged,
for the caller to run through ``GaussianMixture`` itself, which handles and reports them.

The (K, n) responsibilities and (m, n) features are held at once (no chunking over rows,
one thread): this is meant for small data, see :func:`fits_in_batch`.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm.em import _Run, held_by_regularization
from bayes_gmm.structures import canonical_name, get_structure

__all__ = ["Batch", "batched_em", "fits_in_batch", "kernel_loaded", "log_norm_and_resp"]

#: Largest number of float64 elements in the kernel's temporaries (~32 MB).
MAX_BATCH_ELEMENTS = 2**22


def fits_in_batch(n_samples, n_components, n_features, covariance_type):
    """Whether the kernel's temporaries stay below ``MAX_BATCH_ELEMENTS`` (small data).

    The temporaries are the (K, n) responsibilities and the (m, n) features (the starts
    run one after the other, so their number does not count). Larger data are better
    served by ``GaussianMixture.fit``, whose E-step is chunked and threaded.
    """
    per_row = n_components + g.feature_width(n_features, covariance_type) + 4
    return n_samples * per_row <= MAX_BATCH_ELEMENTS


def kernel_loaded():
    """Whether this process has loaded (or compiled) the kernel (its first call takes time)."""
    module = sys.modules.get("bayes_gmm._em_kernel")
    return module is not None and bool(module.run_starts.signatures)


@functools.cache
def _kernel():
    # Imported on first use: numba's import (and its first compile) is paid only by
    # programs that run a selection grid.
    from bayes_gmm import _em_kernel

    return _em_kernel


def batched_em(
    X,
    sample_weight,
    covariance_type,
    weights,
    means,
    covariances,
    *,
    tol,
    max_iter,
    reg_covar=1e-6,
    prior=None,
    features=None,
    data_scale=None,
    parallel=True,
):
    """Run EM from R starts of the same mixture, in compiled code.

    Each start follows ``GaussianMixture._run_em``: the objective is evaluated at the
    current parameters; once it changed by less than ``tol`` times the total weight, one
    more M-step is taken (scikit-learn's rule) and the start stops there, or after
    ``max_iter`` M-steps.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    sample_weight : ndarray of shape (n,)
    covariance_type : str
        scikit-learn's four names or mclust's codes (:mod:`bayes_gmm.structures`).
    weights : ndarray of shape (R, K)
    means : ndarray of shape (R, K, d)
        Centered by the weighted data mean ``sample_weight @ X / sample_weight.sum()``.
    covariances : ndarray of shape (R, ...)
        One start's covariances per row: (R, K, d, d) full, (R, d, d) tied, (R, K, d) diag,
        (R, K) spherical.
    tol : float
        Per unit of sample weight, as ``GaussianMixture``'s ``tol``.
    max_iter : int or array-like of int of shape (R,)
        Maximum number of M-steps, per start if an array.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals when ``prior`` is None (scikit-learn's four
        structures only, as ``GaussianMixture``).
    prior : bayes_gmm.priors.ResolvedPrior or None, default=None
        MAP estimation under this prior (resolved for ``X``); its log density is added to
        the objective.
    features : ndarray of shape (m, n), default=None
        ``_gaussian.features`` of the centered rows, transposed and C-contiguous, for a
        caller that runs many batches on the same data; computed when None.
    data_scale : float, default=None
        The largest column variance of ``X`` (``GaussianMixture``'s scale for a covariance
        held only by ``reg_covar``), for such a caller; computed when None.
    parallel : bool, default=True
        Whether the starts may be shared out over the worker threads (on large enough
        data); False for a caller that runs batches on several threads itself.

    Returns
    -------
    list of bayes_gmm.em._Run or None
        One per start, in order, as ``GaussianMixture._run_em`` returns it; None for a
        start that hit a case this module does not reproduce (a covariance that is not
        numerically positive definite, an emptied component, a covariance held only by
        ``reg_covar``), which the caller must rerun through ``GaussianMixture`` so that it
        warns as usual.
    """
    batch = Batch(
        X,
        sample_weight,
        covariance_type,
        np.shape(weights)[1],
        tol=tol,
        reg_covar=reg_covar,
        prior=prior,
        features=features,
        data_scale=data_scale,
    )
    ends = batch.run(weights, means, covariances, max_iter, parallel=parallel)
    return [None if end is None else end.to_run() for end in ends]


class Batch:
    """:func:`batched_em`'s set-up for one mixture on one data set, for several calls.

    Everything but the starts (the kernel's settings, the features, the prior's terms),
    so that a caller that runs its starts in stages (a selection grid's cell) prepares
    them once. The parameters are :func:`batched_em`'s, plus ``n_components`` and, for a
    caller that holds them, ``center`` (``sample_weight @ X / sample_weight.sum()``) and
    ``tied_moment`` (``_gaussian.weighted_second_moment`` of the rows centered by it).
    """

    def __init__(
        self,
        X,
        sample_weight,
        covariance_type,
        n_components,
        *,
        tol,
        reg_covar=1e-6,
        prior=None,
        features=None,
        data_scale=None,
        center=None,
        tied_moment=None,
    ):
        kernel = self._kernel = _kernel()
        structure = get_structure(covariance_type)
        ctype = self.ctype = canonical_name(covariance_type)
        self.layout = structure.storage
        if not structure.is_sklearn or prior is not None:
            # Under a prior its scale keeps covariances positive definite instead.
            reg_covar = 0.0
        X = np.asarray(X, dtype=float)
        w = self.w = np.ascontiguousarray(sample_weight, dtype=float)
        K = self.K = int(n_components)
        d = self.d = X.shape[1]
        if center is None:  # the frame of the features (a caller's too) and of the prior
            center = w @ X / w.sum()
        feats = features
        if feats is None:
            feats = np.ascontiguousarray(g.features(X - center, ctype).T)
        self.feats = feats
        if not self.layout.shared:
            tied_moment = np.zeros((d, d))
        elif tied_moment is None:
            tied_moment = g.weighted_second_moment(X - center, w)
        prior_scale, prior_scatter = np.zeros((d, d)), np.zeros((K, d, d))
        prior_counts = np.zeros(K)
        if prior is None:
            hyper, prior_mean, prior_const = np.ones(3), np.zeros(d), 0.0
        else:
            centered = g.CenteredPrior.from_resolved(prior, center)
            hyper = np.array([centered.alpha, centered.kappa, centered.nu], dtype=float)
            prior_mean = np.ascontiguousarray(centered.mean, dtype=float)
            prior_const = float(prior._log_normalizer)
            if centered.map_terms is None:
                prior_scale = np.ascontiguousarray(
                    g.full_covariances(centered.scale, ctype, 1, d).reshape(d, d), dtype=float
                )
            else:  # the "full" layout's update reads these instead of the scale
                prior_counts, prior_scatter = (np.array(a, order="C") for a in centered.map_terms)
        self.with_prior = prior is not None
        self.reg_covar = float(reg_covar)
        self.data_scale = data_scale
        self.X = X
        self.code = kernel.CTYPE_CODES[ctype]
        # Every argument has one type, C layout and is writable, so that numba never
        # compiles a second specialization (seconds) because, say, reg_covar came as an int
        # or max_iter as a read-only array.
        self.settings = (
            float(tol * w.sum()), self.reg_covar, tied_moment, prior is not None, hyper,
            prior_mean, prior_scale, prior_counts, prior_scatter, prior_const,
        )  # fmt: skip

    def run(self, weights, means, covariances, max_iter, parallel=True):
        """:func:`batched_em` from these starts (``weights`` (R, K), ``means``,
        ``covariances`` and ``max_iter`` as there), each as a :class:`StartEnd` (or None)."""
        kernel, ctype, layout = self._kernel, self.ctype, self.layout
        K, d, feats, w, settings = self.K, self.d, self.feats, self.w, self.settings
        R = len(weights)
        max_iters = np.empty(R, dtype=np.int64)  # writable
        max_iters[:] = max_iter
        weights = np.array(weights, dtype=float, order="C")
        means = np.array(means, dtype=float, order="C")
        # A copy (the kernel overwrites it), in the kernel's (R, K, d, d) layout.
        covs = np.array(layout.to_full(covariances, K, d), dtype=float, order="C")
        history = np.empty((R, int(max_iters.max(initial=0)) + 1))
        n_iter = np.zeros(R, dtype=np.int64)
        converged = np.zeros(R, dtype=np.bool_)
        status = np.zeros(R, dtype=np.int64)
        prec_chol = np.zeros((R, K, d, d))

        def run(first, last):
            kernel.run_starts(
                self.code, feats, w, weights[first:last], means[first:last], covs[first:last],
                max_iters[first:last], *settings, history[first:last], n_iter[first:last],
                converged[first:last], status[first:last], prec_chol[first:last],
            )  # fmt: skip

        if parallel:
            _run_in_parallel(run, R, n_iterations=int(max_iters.sum()), work=feats.size * K)
        else:
            run(0, R)
        ok = range(R)
        if np.count_nonzero(status):  # kernel.OK is 0: some start is left to the caller
            ok = np.flatnonzero(status == kernel.OK).tolist()
            covs, prec_chol = covs[ok], prec_chol[ok]
        covs = layout.from_kernel(covs)
        prec_chol = layout.from_kernel(prec_chol)
        held = None  # whether a covariance is held only by reg_covar
        if not self.with_prior and len(ok):
            if self.data_scale is None:
                self.data_scale = float(np.max(np.var(self.X, axis=0))) or 1.0
            if not _clearly_regular(prec_chol, layout, self.reg_covar, self.data_scale):
                singular = held_by_regularization(covs, ctype, self.reg_covar, self.data_scale)
                held = singular.reshape(len(ok), -1).any(axis=1).tolist()
        # Python scalars and lists at once: indexing numpy arrays per start costs more.
        n_iter_list = n_iter.tolist()
        objectives = history[np.arange(R), n_iter].tolist()
        ends = _Ends()
        ends.weights, ends.means, ends.covariances, ends.prec_chol = weights, means, covs, prec_chol
        ends.history, ends.n_iter, ends.objective = history, n_iter_list, objectives
        ends.converged = converged.tolist()
        results = [None] * R
        for j, r in enumerate(ok):
            if held is None or not held[j]:
                results[r] = StartEnd(ends, r, j)
        return results


class _Ends:
    """A batch's outputs: the starts' parameters (covariances and precision factors of the
    starts that ended OK only, in the layout's shapes) and iteration histories, arrays, and
    per start lists of the number of M-steps, convergence and final objective."""

    __slots__ = ("converged", "covariances", "history", "means", "n_iter", "objective",
                 "prec_chol", "weights")  # fmt: skip


class StartEnd:
    """Where one start of a batch ended: the attributes of a ``bayes_gmm.em._Run``, read
    from the batch's arrays when asked for (a grid cell reads the parameters of few of its
    starts, and the history of one)."""

    __slots__ = ("_ends", "_ok", "_start")

    def __init__(self, ends, start, ok):
        self._ends, self._start, self._ok = ends, start, ok

    @property
    def weights(self):
        return self._ends.weights[self._start]

    @property
    def means(self):
        return self._ends.means[self._start]

    @property
    def covariances(self):
        return self._ends.covariances[self._ok]

    @property
    def prec_chol(self):
        return self._ends.prec_chol[self._ok]

    @property
    def objective(self):
        return self._ends.objective[self._start]

    @property
    def n_iter(self):
        return self._ends.n_iter[self._start]

    @property
    def converged(self):
        return self._ends.converged[self._start]

    @property
    def history(self):
        """The objective at each iteration, an array (``_Run.history``'s values)."""
        return self._ends.history[self._start, : self.n_iter + 1].copy()

    def to_run(self):
        """This start's ``bayes_gmm.em._Run``."""
        return _Run(self.weights, self.means, self.covariances, self.prec_chol,
                    objective=self.objective, history=self.history.tolist(),
                    converged=self.converged, n_iter=self.n_iter)  # fmt: skip


def log_norm_and_resp(features, covariance_type, weights, means, covariances):
    """``GaussianMixture._log_norm_and_resp`` of a fitted mixture, in compiled code.

    For a caller that holds the data's features (a selection grid: the numpy version's
    calls cost ten times its arithmetic on a few hundred rows).

    Parameters
    ----------
    features : ndarray of shape (m, n)
        As for :func:`batched_em`.
    covariance_type : str
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
        Centered as ``features``.
    covariances : ndarray
        In the estimator's shape for ``covariance_type``.

    Returns
    -------
    (log_norm, resp) : ndarray of shape (n,) and (n, K), or None
        None if a covariance is not numerically positive definite.
    """
    kernel = _kernel()
    ctype = canonical_name(covariance_type)
    K, d = means.shape
    n = features.shape[1]
    covs = np.array(g.full_covariances(covariances, ctype, K, d), dtype=float, order="C")
    log_norm, resp = np.empty(n), np.empty((K, n))
    if not kernel.log_norm_and_resp(
        kernel.CTYPE_CODES[ctype], features, np.ascontiguousarray(weights, dtype=float),
        np.ascontiguousarray(means, dtype=float), covs, log_norm, resp,
    ):  # fmt: skip
        return None
    return log_norm, resp.T


#: Below this many multiply-adds (feature values x K x iterations) the starts run on one
#: thread: handing work to another costs tens of microseconds.
MIN_PARALLEL_WORK = 500_000
#: Nor below this many per iteration (feature values x K): starts of a few microseconds
#: per iteration (Old Faithful's 272 rows) gained no wall time on a second thread and
#: cost 5-10% more CPU (handing each start over, the GIL around each kernel call).
MIN_PARALLEL_ITERATION_WORK = 50_000


def _run_in_parallel(run, n_starts, n_iterations, work):
    """Call ``run(first, last)`` over the starts, one at a time, on the worker threads.

    Each start is independent and the kernel releases the GIL, so the starts are shared
    out as they finish (their lengths differ): the results are those of one call over all
    of them. Small batches stay on the calling thread.
    """
    workers = min(g.n_available_workers(), n_starts)
    small = work < MIN_PARALLEL_ITERATION_WORK or n_iterations * work < MIN_PARALLEL_WORK
    if workers < 2 or small:
        run(0, n_starts)
        return
    g.share_out(lambda r: run(r, r + 1), n_starts, workers)


def _clearly_regular(prec_chol, layout, reg_covar, data_scale):
    """Whether no covariance can be one that ``held_by_regularization`` flags.

    A cheap sufficient test, so that the eigenvalues are only computed when it fails: the
    smallest eigenvalue of a covariance is at least ``1 / ||P||_F**2`` for its precision
    factor ``P`` (``inv(cov) = P P'``), checked here with a margin for rounding.
    """
    if not layout.stores_matrices:
        return False  # held_by_regularization has no eigenvalues to compute there
    largest = float(np.square(prec_chol).sum(axis=(-2, -1)).max())
    return (1.0 - 1e-6) / largest - reg_covar > 1e-9 * data_scale
