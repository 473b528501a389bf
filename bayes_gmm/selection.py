"""Choosing the number of components and the covariance structure by BIC, AIC or ICL.

:func:`select_model` fits a grid of Gaussian mixtures (every covariance structure x every
number of components) by EM and returns a :class:`ModelSelection`
(:mod:`bayes_gmm.selection_result`): the table of criteria (one row per cell, as R's
``mclust`` prints it), the winner, a ranking and mclust's BIC plot.

Every criterion uses scikit-learn's sign, lower is better::

    bic = -2 logL + p log n        aic = -2 logL + 2 p        icl = bic - 2 sum_i log max_k r_ik

mclust reports ``2 logL - p log n`` (higher is better): its BIC is minus ours.

How each cell is fitted (reliability and sharing)
-------------------------------------------------
The data are validated once. For each K, ``n_init`` hard partitions are computed once and
shared by all the covariance structures: the first is k-means (Lloyd from k-means++ seeds),
the others assign every row to the nearest of k-means++ seeds drawn with distinct seeds.
mclust's own start is added to them: model-based hierarchical agglomeration (VVV merging
on SVD-transformed data, on at most 2000 rows; :mod:`bayes_gmm._hc`), one tree cut at
every K. Each partition gives one start per structure (the clusters' weights, means and
covariances). A cell also starts

- from the solution of the same structure at K - 1, its largest component (by weight x
  determinant of the covariance) split in two along its principal axis, and
- from the solutions of more constrained structures at the same K: among scikit-learn's
  four, from each one before it (spherical -> diag -> tied -> full, converted to the
  cell's structure); otherwise from the nested model with the best objective (through
  the cell's M-step, so at least as good as that solution).

Every start runs ``SHORT_ITER`` EM iterations; those then within ``SHORT_MARGIN`` (per
sample) of the leader run on to ``EXPLORE_TOL`` (the others, heading for clearly worse
optima, stop there; on Old Faithful this saved a large share of the time and changed no
cell when it was introduced; mclust's hierarchical start always runs on, so that every
cell reaches at least what mclust reaches from it). The starts of a stage run in one
call of a compiled EM kernel (:mod:`bayes_gmm._batched_em`: the iterations of
``GaussianMixture.fit`` without its per-iteration numpy overhead, which is most of the
time on small data). The best start (highest objective) is kept, and the table reports
how many starts reached it (``n_best`` of ``n_starts``; a low ratio flags a likelihood
with several local optima).
With several cores, cells run at the same time, one per thread (``_gaussian.N_WORKERS``,
else one per core, at most ``MAX_GRID_THREADS``), each as soon as the cells it starts from
are done (the same structure at K - 1 and the structures nested in it at K); the kernel
releases the GIL. A cell's result depends only on those cells, so the table is the same
on any number of threads.
Then the cells that could still win are run on to the final ``tol``: visited best first, a
cell is refined unless its criterion, less a generous bound on what more iterations could
gain (ten times the geometric extrapolation of its last EM steps), is above the best
refined value. ``refine="all"`` refines every cell.

With more than ``SUBSAMPLE_SIZE`` rows the starts are explored on a random subsample (as
mclust initializes on one) and each cell's best start is then run on all the data.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import heapq
import numbers
import os
import sys
import threading
import time
import warnings

import numpy as np
import pandas as pd
from sklearn.exceptions import ConvergenceWarning

from bayes_gmm import _dask, _missing
from bayes_gmm import _gaussian as g
from bayes_gmm import _grid_starts as grid
from bayes_gmm._batched_em import Batch, fits_in_batch, kernel_loaded, log_norm_and_resp
from bayes_gmm._validation import (
    DataWarning,
    check_data,
    check_int,
    check_real,
    check_sample_weight,
    warn_constant_columns,
)
from bayes_gmm.em import DegenerateFitWarning, GaussianMixture, _Run, n_parameters
from bayes_gmm.priors import COVARIANCE_TYPES, _check_prior
from bayes_gmm.selection_result import CRITERIA, TABLE_COLUMNS, ModelSelection, check_criterion
from bayes_gmm.structures import (
    MCLUST_MODELS,
    SKLEARN_NAMES,
    get_structure,
    is_structure,
)

__all__ = ["CRITERIA", "ModelSelection", "select_model"]

#: mclust's names of scikit-learn's four structures (volume, shape, orientation:
#: Equal/Variable/Identity); :mod:`bayes_gmm.structures` has all 14.
MCLUST_NAMES = dict(SKLEARN_NAMES)

#: What ``select_model`` fits when ``covariance_types`` is not given, for d >= 2: mclust's
#: 14 models under their codes, as mclust's ``Mclust`` does.
DEFAULT_COVARIANCE_TYPES = MCLUST_MODELS

#: The default in one dimension, where there are only mclust's "E" and "V": scikit-learn's
#: four names, of which "tied" (E) and "full" (V) are fitted (see ``_collapse``).
DEFAULT_COVARIANCE_TYPES_1D = COVARIANCE_TYPES

#: Tolerance of the exploratory EM runs (change of the objective per sample). Only the best
#: start of a cell is then run on to the final ``tol``.
EXPLORE_TOL = 1e-5

#: Iterations every start gets before the starts far behind the leader are dropped, and
#: how far behind (objective per sample) a start may be and still run on.
SHORT_ITER = 30
SHORT_MARGIN = 0.02

#: The partitions mclust's constrained models (beyond scikit-learn's four) start from; they
#: also start from the solutions of the nested models, which had every partition.
CONSTRAINED_PARTITIONS = ("kmeans", "hc")

#: Starts that always run on to convergence: mclust's own start, so that every cell
#: reaches at least what mclust reaches from it.
UNPRUNED_STARTS = ("hc",)

#: A start "reached the best optimum" when its objective is within this much per sample
#: (per unit of sample weight) of the best start's, after the exploratory runs.
REACHED_TOL = 1e-4

#: Above this many rows the starts are explored on a random subsample of this size.
SUBSAMPLE_SIZE = 5_000

#: Most threads the grid's cells run on (one per core up to this). About a third of a
#: cell's time on small data is Python holding the GIL, so more threads than this would
#: mostly wait for it.
MAX_GRID_THREADS = 4


# --------------------------------------------------------------------------- progress
class _Progress:
    """A one-line progress bar on stderr (no dependency), redrawn in place."""

    def __init__(self, total, enabled):
        self.total, self.enabled, self.done = total, enabled, 0
        self.start = time.perf_counter()
        self.width = 0

    def update(self, label):
        """A cell is done."""
        self.done += 1
        self.show(label)

    def note(self, message):
        """A line of its own above the bar."""
        if self.enabled:
            sys.stderr.write(("\r" + " " * self.width + "\r") * bool(self.width) + message + "\n")
            sys.stderr.flush()

    def show(self, label):
        """Redraw with ``label`` (what is being done now, or was just done)."""
        if not self.enabled:
            return
        width = 24
        filled = int(width * self.done / max(self.total, 1))
        elapsed = time.perf_counter() - self.start
        line = (
            f"\rselect_model [{'#' * filled}{'.' * (width - filled)}] "
            f"{self.done}/{self.total} {elapsed:6.1f}s {label}"
        )
        self.width = max(self.width, len(line))
        sys.stderr.write(line.ljust(self.width))  # blanks out a longer previous label
        sys.stderr.flush()

    def close(self):
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _default_verbose():
    # A bar in an interactive terminal, never under pytest or in a pipe.
    return sys.stderr.isatty() and "PYTEST_CURRENT_TEST" not in os.environ


# --------------------------------------------------------------------------- validation
def default_covariance_types(n_features):
    """The structures :func:`select_model` fits when ``covariance_types`` is None.

    mclust's 14 models (``DEFAULT_COVARIANCE_TYPES``) for two or more features;
    scikit-learn's four names in one dimension, where they are mclust's "E" and "V".
    """
    return DEFAULT_COVARIANCE_TYPES_1D if n_features == 1 else DEFAULT_COVARIANCE_TYPES


def _check_grid(n_components, covariance_types):
    if isinstance(n_components, numbers.Integral) and not isinstance(n_components, bool):
        n_components = [n_components]
    try:
        ks = list(n_components)
    except TypeError:
        raise ValueError(
            "n_components must be a positive integer or an iterable of them (e.g. range(1, 10)), "
            f"got {n_components!r}."
        ) from None
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1]
    if not ks or bad:
        raise ValueError(
            "n_components must be a non-empty iterable of positive integers (e.g. range(1, 10)); "
            + (f"invalid value(s): {bad!r}." if bad else "it is empty.")
        )
    ks = sorted({int(k) for k in ks})

    if covariance_types is None:
        return ks, None
    if isinstance(covariance_types, str) and covariance_types == "all":
        return ks, list(MCLUST_MODELS)
    if isinstance(covariance_types, str):
        covariance_types = [covariance_types]
    types = list(dict.fromkeys(covariance_types))
    unknown = [t for t in types if not is_structure(t)]
    if not types or unknown:
        raise ValueError(
            f"covariance_types must be a non-empty list of mclust's models {MCLUST_MODELS} "
            f"or scikit-learn's names {COVARIANCE_TYPES}; "
            + (f"unknown: {unknown!r}." if unknown else "it is empty.")
        )
    return ks, types


def _collapse(types, n_features):
    """Keep one name per distinct model, the first given.

    A model given twice ("full" and "VVV") is fitted once; in 1-D only the volume
    letter counts (mclust's "E" and "V"): "tied" and "EII" are the same model there.
    """
    keep, collapsed, first = [], {}, {}
    for t in types:
        structure = get_structure(t)
        key = structure.volume if n_features == 1 else structure.name
        if key in first:
            collapsed[t] = first[key]
        else:
            first[key] = t
            keep.append(t)
    return keep, collapsed


# --------------------------------------------------------------------------- fitting
def _batch(data, K, ctype, resolved):
    """The compiled kernel's set-up for a cell's starts (``_batched_em.Batch``), or None
    on data too large for it."""
    n, d = data.X.shape
    if not fits_in_batch(n, K, d, ctype):
        return None
    return Batch(
        data.X,
        data.w,
        ctype,
        K,
        tol=EXPLORE_TOL,
        reg_covar=data.reg_covar,
        prior=resolved,
        features=data.features_t(ctype),
        data_scale=data.data_scale,
        center=data.center,
        tied_moment=data.tied_moment if get_structure(ctype).shares_covariance else None,
    )


def _run_starts(data, K, ctype, starts, prior, batch, max_iter, parallel=True):
    """EM to ``EXPLORE_TOL`` from each start; per start ``(run or None, reason)``.

    ``starts`` are centered (weights, means, covariances); ``batch`` is :func:`_batch`'s;
    ``max_iter`` is one int per start. On small data the starts run together in the
    compiled kernel (``batch``: the iterations of ``GaussianMixture.fit`` without its
    per-iteration numpy overhead). Starts it leaves alone (a degenerate run), and all
    starts on data too large for it, are fitted by ``GaussianMixture`` one by one, so that
    they fail with its reason.
    """
    results = [None] * len(starts)
    if starts and batch is not None:
        # The starts' parts as sequences: Batch.run stacks them into its own copies.
        weights, means, covs = zip(*starts, strict=True)
        results = batch.run(weights, means, covs, max_iter, parallel=parallel)
    out = []
    for run, start, limit in zip(results, starts, max_iter, strict=True):
        out.append((run, "") if run is not None else _run_one(data, K, ctype, start, prior, limit))
    return out


def _run_one(data, K, ctype, start, prior, max_iter):
    """:func:`_run_starts` for one start through ``GaussianMixture.fit``."""
    weights, means, covs = start
    # Through the Cholesky factor: exactly symmetric, as precisions_init must be.
    precisions = g.precisions_from_cholesky(g.precision_cholesky(covs, ctype)[0], ctype)
    est = _estimator(
        data,
        K,
        ctype,
        prior,
        max_iter,
        weights_init=weights,
        means_init=means + data.center,
        precisions_init=precisions,
    )
    fitted, reason = _fit_quietly(est, data.X, data.w)
    if fitted is None:
        return None, reason
    run = _Run(
        est.weights_,
        est.means_ - data.center,
        est.covariances_,
        est.precisions_cholesky_,
        objective=est.log_likelihood_,
        history=list(est.history_),
        converged=est.converged_,
        n_iter=est.n_iter_,
    )
    return run, ""


#: Held around recording a fit's warnings: ``warnings.catch_warnings`` swaps the process's
#: filters, and two cells recording at once on two threads would restore each other's.
_RECORDING = threading.Lock()


def _fit_quietly(estimator, X, w):
    """Fit; return ``(estimator or None, reason)``, the reason set on an error or degeneracy."""
    with _RECORDING, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            estimator.fit(X, sample_weight=w)
        except Exception as exc:  # a failed start must not lose the grid
            return None, f"{type(exc).__name__}: {exc}"
    for item in caught:
        if issubclass(item.category, DegenerateFitWarning):
            return None, f"degenerate: {item.message}"
    return estimator, ""


def _explore(data, K, ctype, starts, prior, max_iter, parallel=True):
    """Run the starts to ``EXPLORE_TOL``; return the best as an estimator, and the counts.

    Every start first runs at most ``SHORT_ITER`` iterations; only those then within
    ``SHORT_MARGIN`` (per sample) of the leader run on to convergence, so that starts
    heading for a clearly worse optimum stop early (the "short EM" strategy of Biernacki,
    Celeux and Govaert, 2003, with a margin instead of a single winner). The starts of
    each stage run together (:func:`_run_starts`).
    """
    total_w = float(data.w.sum())
    starts = [(kind, params) for kind, params in starts if params is not None]
    short = min(SHORT_ITER, max_iter)
    resolved = None if prior is None else prior.resolve(data.X, K, ctype, sample_weight=data.w)
    batch = _batch(data, K, ctype, resolved) if starts else None
    runs, reasons = [], []
    done = _run_starts(
        data, K, ctype, [p for _, p in starts], prior, batch, [short] * len(starts), parallel
    )
    for (kind, _), (run, reason) in zip(starts, done, strict=True):
        if run is None:
            reasons.append(reason)
        else:
            runs.append([kind, run, run.n_iter])
    if runs and max_iter > SHORT_ITER:
        leader = max(run.objective for _, run, _ in runs)
        going_on = [
            entry
            for entry in runs
            if not entry[1].converged
            and (
                entry[0] in UNPRUNED_STARTS or entry[1].objective >= leader - SHORT_MARGIN * total_w
            )
        ]
        done = _run_starts(
            data,
            K,
            ctype,
            [(run.weights, run.means, run.covariances) for _, run, _ in going_on],
            prior,
            batch,
            [max_iter - n_iter for _, _, n_iter in going_on],
            parallel,
        )
        for entry, (run, reason) in zip(going_on, done, strict=True):
            if run is None:
                entry[1] = None
                reasons.append(reason)
            else:
                entry[1] = run
                entry[2] += run.n_iter
        runs = [entry for entry in runs if entry[1] is not None]
    info = {"n_starts": len(runs) + len(reasons), "n_best": 0}
    if not runs:
        info["reason"] = reasons[0] if reasons else "no usable starting point"
        return None, info
    objectives = np.array([run.objective for _, run, _ in runs])
    best_i = int(np.argmax(objectives))
    kind, best, n_iter = runs[best_i]
    reached = objectives[best_i] - objectives <= REACHED_TOL * total_w
    info.update(n_best=int(reached.sum()), best_start=kind, n_iter=n_iter)
    est = _estimator(data, K, ctype, prior, max_iter)
    est._store_run(best, data.center, total_w, data.X.shape[1], resolved)
    return est, info


def _log_norm_and_resp(est, data, ctype):
    """``est._log_norm_and_resp(data.X)``, in the compiled kernel where it serves."""
    K, d = est.means_.shape
    if fits_in_batch(data.X.shape[0], K, d, ctype):
        out = log_norm_and_resp(
            data.features_t(ctype), ctype, est.weights_, est.means_ - data.center,
            est.covariances_,
        )  # fmt: skip
        if out is not None:
            return out
    return est._log_norm_and_resp(data.X)


def _estimator(data, K, ctype, prior, max_iter, **inits):
    """The grid's ``GaussianMixture`` for one cell (explored to ``EXPLORE_TOL``)."""
    return GaussianMixture(
        K,
        covariance_type=ctype,
        tol=EXPLORE_TOL,
        reg_covar=data.reg_covar,
        max_iter=max_iter,
        prior=prior,
        **inits,
    )


def _continue(est, data, tol):
    """Run a fitted estimator on from its parameters (on ``data``) until ``tol``."""
    est.set_params(tol=tol, warm_start=True)
    fitted, reason = _fit_quietly(est, data.X, data.w)
    est.set_params(warm_start=False)
    return fitted, reason


def _remaining_gain(history):
    """Rough estimate of what EM would still gain: geometric extrapolation of the last steps."""
    steps = np.diff(np.asarray(history, dtype=float)[-3:])
    if steps.size == 0:
        return 0.0
    last = max(float(steps[-1]), 0.0)
    rate = steps[-1] / steps[-2] if steps.size == 2 and steps[-2] > 0 else 0.99
    rate = float(np.clip(rate, 0.0, 0.99))
    return last * rate / (1.0 - rate)


def _failed(row, reason):
    row.update({k: np.nan for k in ("log_likelihood", "bic", "aic", "icl")}, reason=reason)
    row.pop("converged", None)


#: The table's columns of integers that a failed cell leaves empty, and of booleans.
_INTEGER_COLUMNS = ("n_starts", "n_best", "n_iter", "n_parameters")
_BOOLEAN_COLUMNS = ("converged",)


def _table(rows):
    """The grid's table from one dict per cell (a key a cell lacks: NA), column by column
    (a frame from the rows, reindexed and converted, cost several times more)."""
    columns = {}
    for col in TABLE_COLUMNS:
        values = [row.get(col, "" if col == "reason" else np.nan) for row in rows]
        if col == "n_components":
            values = np.array(values, dtype=int)
        elif col in _INTEGER_COLUMNS:
            values = pd.array(values, dtype="Int64")
        elif col in _BOOLEAN_COLUMNS:
            values = pd.array(values, dtype="boolean")
        columns[col] = values
    return pd.DataFrame(columns)


def _run_grid(data, sub, ks, types, names, settings, progress):
    """Fit every cell; each after the cells it starts from (the same structure at K - 1,
    whose split it tries, and the structures nested in it at the same K).

    ``sub`` is the data the starts are explored on (a subsample of ``data`` when that is
    large, else ``data`` itself); ``settings`` holds n_init, entropy, prior, tol, max_iter,
    criterion and refine. With several cores, cells whose starts are ready run at the same
    time, one per thread (the EM kernel releases the GIL); a cell's result depends only on
    the cells it starts from, so the table is the same on any number of threads.
    """
    s = settings
    n_rows = int(np.count_nonzero(data.w > 0))
    n_distinct = len(np.unique(data.X[data.w > 0], axis=0))
    d = data.X.shape[1]
    cells, estimators, parents = {}, {}, {}
    # Within a K the constrained structures go first, so that the flexible ones can also
    # start from their solutions.
    fit_order = grid.nesting_order(types)
    todo = []
    for K in ks:
        for ctype in fit_order:
            row = {
                "covariance_type": ctype,
                "n_components": K,
                "mclust": names[ctype],
                "n_parameters": n_parameters(K, d, ctype),
            }
            cells[(ctype, K)] = row
            if K > n_distinct:
                row["reason"] = (
                    f"K={K} exceeds the number of distinct rows with positive weight "
                    f"({n_distinct}): some component would be empty"
                )
            elif s["prior"] is not None and not get_structure(ctype).has_map:
                row["reason"] = (
                    f"no conjugate prior for {get_structure(ctype).name} (nor in mclust's "
                    "priorControl): not fitted under a prior"
                )
            elif row["n_parameters"] >= n_rows:
                # Such a model can fit the rows almost exactly: its likelihood, and with
                # it every criterion, says nothing (12 normal points chose tied K=9).
                row["reason"] = (
                    f"{row['n_parameters']} free parameters, not fewer than the {n_rows} rows "
                    "with positive weight: the model is not estimable from these data"
                )
            if row.get("reason"):
                progress.update(f"{ctype} K={K}")
            else:
                todo.append((ctype, K))
    if todo and not kernel_loaded():  # else the bar would stand still while numba compiles
        progress.note(
            "loading the compiled EM kernel (its first use after installing compiles it, ~7 s)"
        )
    workers = min(g.n_available_workers(), MAX_GRID_THREADS, len(todo))
    shared = grid.SharedStarts(sub, ks, s)
    for ctype in types:  # computed once, before threads could compute them twice
        sub.features_t(ctype)
    left = {K: sum(1 for _, k in todo if k == K) for K in ks}

    def fit(key):
        if workers < 2:  # the bar is drawn from this thread only
            progress.show(f"{key[0]} K={key[1]}")
        return _fit_cell(data, sub, *key, shared, parents, fit_order, s, parallel=workers < 2)

    def finish(key, result):
        ctype, K = key
        info, est, parent = result
        cells[key].update(info)
        if parent is not None:
            parents[key] = parent
        if est is not None:
            estimators[key] = est
        progress.update(f"{ctype} K={K}")
        left[K] -= 1
        if not left[K]:  # K - 1's solutions are no longer needed
            for other in types:
                parents.pop((other, K - 1), None)

    def starts_from(key):
        ctype, K = key
        pairs, nested = grid.possible_sources(tuple(fit_order), ctype)
        return [(ctype, K - 1), *((o, K) for o in pairs + nested)]

    _in_dependency_order(todo, starts_from, fit, finish, workers)
    _refine(data, cells, estimators, s)
    for row in cells.values():
        if row.get("converged") is False and not row.get("reason"):
            row["reason"] = f"EM did not converge in max_iter={s['max_iter']}"
    return cells, estimators


def _in_dependency_order(keys, needs, run, finish, workers):
    """``finish(key, run(key))`` for every key, each after the keys ``needs(key)`` names
    (those among ``keys``), on this thread and ``workers - 1`` others.

    ``keys`` is in an order that runs every key after its needs; on one worker they run in
    that order. On more, each thread takes the next ready key when it is done with one:
    the one with the longest chain of keys waiting on it (which would otherwise run alone
    at the end), the first in ``keys`` among equals. ``finish`` runs on the thread that
    ran the key, never two at once.
    """
    if workers < 2:
        for key in keys:
            finish(key, run(key))
        return
    rank = {key: i for i, key in enumerate(keys)}
    waiting, dependents = {}, {key: [] for key in keys}
    for key in keys:
        waiting[key] = {need for need in needs(key) if need in rank}
        for need in waiting[key]:
            dependents[need].append(key)
    chain = {}  # the longest chain of keys that starts at each key
    for key in reversed(keys):
        chain[key] = 1 + max((chain[d] for d in dependents[key]), default=0)
    order = {key: (-chain[key], rank[key]) for key in keys}
    ready = [(order[key], key) for key in keys if not waiting[key]]
    heapq.heapify(ready)
    state = threading.Condition()
    running, errors = 0, []

    # Each thread finishes its own keys and takes the next: a coordinating thread would
    # wait for the GIL (up to the interpreter's 5 ms switch interval) before handing on.
    def work():
        nonlocal running
        while True:
            with state:
                while not ready and running and not errors:
                    state.wait()
                if errors or not ready:  # all done, or a key failed
                    return
                key = heapq.heappop(ready)[1]
                running += 1
            try:
                result = run(key)
                with state:
                    finish(key, result)
                    for dependent in dependents[key]:
                        waiting[dependent].discard(key)
                        if not waiting[dependent]:
                            heapq.heappush(ready, (order[dependent], dependent))
            except BaseException as exc:
                with state:
                    errors.append(exc)
                raise
            finally:
                with state:
                    running -= 1
                    state.notify_all()

    # Threads of their own: on the E-step's pool (g.worker_pool), the cells would hold its
    # threads and a cell's E-step on large data would find no helper free.
    with concurrent.futures.ThreadPoolExecutor(
        workers - 1, thread_name_prefix="bayes_gmm_grid"
    ) as pool:
        helpers = [pool.submit(work) for _ in range(workers - 1)]
        try:
            work()
        finally:
            concurrent.futures.wait(helpers)
    for helper in helpers:
        helper.result()  # a helper's error, if this thread had none


def _fit_cell(data, sub, ctype, K, shared, parents, fit_order, s, parallel):
    """Explore one cell's starts on ``sub`` and evaluate the best on ``data``.

    ``parents`` holds the solutions of the cells this one starts from. Returns the row's
    entries, the fitted estimator (None if the cell failed) and the cell's solution for
    the cells that start from it (None if none).
    """
    t0 = time.perf_counter()
    starts = [
        (kind, grid.params_from_labels(pdata, labels, K, ctype, moments))
        for kind, pdata, labels, moments in shared.partitions(K)
        if get_structure(ctype).is_sklearn or kind in CONSTRAINED_PARTITIONS
    ]
    if (ctype, K - 1) in parents:
        starts.append(("split", grid.split_start(sub, parents[(ctype, K - 1)], ctype)))
    for other in grid.conversion_sources(fit_order, ctype, K, parents):
        params = grid.convert_start(parents[(other, K)], other, ctype)
        starts.append((f"from {other}", params))
    est, info = _explore(sub, K, ctype, starts, s["prior"], s["max_iter"], parallel)
    on_data = None  # the responsibilities on all the data, shared when sub is data
    parent = None
    if est is not None:
        if sub is data:
            on_data = _log_norm_and_resp(est, data, ctype)
        parent = grid.Parent.from_estimator(
            est, sub, ctype, None if on_data is None else on_data[1]
        )
        if sub is not data:
            est, reason = _continue(est, data, EXPLORE_TOL)
            if est is None:
                info["reason"] = reason
            else:
                info["n_iter"] += est.n_iter_
    if est is not None:
        criteria = est._criteria(data.X, data.w, on_data)
        info.update(criteria, converged=est.converged_, tol=EXPLORE_TOL)
    info["fit_time"] = time.perf_counter() - t0
    return info, est, parent


def _refine(data, cells, estimators, s):
    """Run cells on from ``EXPLORE_TOL`` to ``tol``: all, or those that could still win.

    A cell can still win if its criterion, less twice (the log-likelihood enters with
    factor 2) ten times the gain EM would still make by geometric extrapolation, is below
    the best refined criterion so far. Cells are visited best first.
    """
    tol, criterion = s["tol"], s["criterion"]
    if tol >= EXPLORE_TOL:
        return
    order = sorted(estimators, key=lambda key: cells[key][criterion])
    best = np.inf
    for key in order:
        row, est = cells[key], estimators[key]
        slack = 2.0 * 10.0 * _remaining_gain(est.history_)
        if s["refine"] == "contenders" and row[criterion] - slack > best:
            continue
        t0 = time.perf_counter()
        fitted, reason = _continue(est, data, tol)
        if fitted is None:
            _failed(row, reason)
            del estimators[key]
            continue
        row.update(est._criteria(data.X, data.w), converged=est.converged_, tol=tol)
        row["n_iter"] += est.n_iter_
        row["fit_time"] += time.perf_counter() - t0
        best = min(best, row[criterion])


def _finish_on_observed(cells, estimators, X, w, tol):
    """Run every cell on from its imputed-data fit with ``missing="em"`` on ``X`` (with NaN)."""
    for key, est in list(estimators.items()):
        row = cells[key]
        t0 = time.perf_counter()
        est.set_params(missing="em", tol=tol, warm_start=True)
        fitted, reason = _fit_quietly(est, X, w)
        est.set_params(warm_start=False)
        if fitted is None:
            _failed(row, reason)
            del estimators[key]
            continue
        row.update(est._criteria(X, w), converged=est.converged_, tol=tol)
        row["n_iter"] += est.n_iter_
        row["fit_time"] += time.perf_counter() - t0


def select_model(
    X,
    n_components=range(1, 10),
    covariance_types=None,
    criterion="bic",
    prior=None,
    n_init=3,
    random_state=None,
    sample_weight=None,
    *,
    tol=1e-7,
    reg_covar=1e-6,
    max_iter=1000,
    refine="contenders",
    verbose=None,
    missing="error",
):
    """Fit a grid of Gaussian mixtures and choose K and the covariance structure.

    Every combination of ``covariance_types`` and ``n_components`` is fitted by EM from
    several starting points (see the module docstring); the winner minimizes
    ``criterion``. A cell that cannot be fitted (an error, a degenerate fit, K larger than
    the number of distinct rows, at least as many free parameters as rows) keeps its row in
    the table with NaN numbers and the reason.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        Finite numbers; a DataFrame's column names are kept on the fitted estimators.
    n_components : int or iterable of int, default=range(1, 10)
        The numbers of components to try.
    covariance_types : "all" or iterable of str, default=None
        Any of mclust's 14 models ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE",
        "EVE", "VVE", "EEV", "VEV", "EVV", "VVV") and scikit-learn's names ("full" =
        "VVV", "tied" = "EEE", "diag" = "VVI", "spherical" = "VII"); the table's
        ``covariance_type`` column holds each name as given. ``None`` or "all": mclust's
        14 models under their codes (as mclust's ``Mclust``); with one feature ``None``
        fits mclust's two 1-D models as "tied" (E) and "full" (V) (see Notes).
    criterion : {"bic", "aic", "icl"}, default="bic"
        What the winner minimizes. All three are computed for every cell.
    prior : GaussianMixturePrior or None, default=None
        ``None`` fits by maximum likelihood; a prior fits every cell by MAP (as mclust's
        ``priorControl``); the criteria then use the data log-likelihood at the MAP
        estimate.
    n_init : int, default=3
        Data-driven starts per K, shared by all structures: one k-means partition and
        ``n_init - 1`` nearest-seed partitions from k-means++ seeds. Each cell with K > 1
        also starts from the split of its K - 1 solution.
    random_state : int, numpy Generator or RandomState, or None, default=None
        Fixes every start; the seeds depend on K and the start, not on the grid order.
    sample_weight : array-like of shape (n_samples,), default=None
        Non-negative weights; an integer weight counts as that many copies of the row, and
        ``n`` in the BIC is the total weight.
    tol : float, default=1e-7
        Final convergence threshold (change of the objective per sample, per unit of
        sample weight, as :class:`~bayes_gmm.GaussianMixture`'s ``tol``). Starts are
        explored to ``EXPLORE_TOL`` (1e-5); the kept start is then run on to ``tol``. It
        is tight so that the criteria are those of the optimum, not of an iterate: on Old
        Faithful the winner's BIC is then within 2e-4 of its limit (mclust stops at a
        relative change of 1e-5, which leaves its BIC 0.02 short there).
    reg_covar : float, default=1e-6
        Added to the covariance diagonals (maximum likelihood only).
    max_iter : int, default=1000
        EM iterations per start and stage.
    refine : {"contenders", "all"}, default="contenders"
        Which cells are run on to ``tol``. "contenders": only those that could still win,
        i.e. whose criterion minus a generous bound on what further iterations could gain
        is below the best refined value (the others keep ``EXPLORE_TOL``; the table's
        ``tol`` column says which). "all": every cell.
    verbose : bool or None, default=None
        Draw a progress bar on stderr. ``None``: only in an interactive terminal.
    missing : {"error", "em"}, default="error"
        "em" reads NaN as missing at random (see :class:`~bayes_gmm.GaussianMixture`'s
        ``missing``): the starts are explored on the column-mean-imputed data, then every
        cell runs EM on the observed values to ``tol``, and the criteria are the
        observed-data ones. Rows with every value missing are refused.

    Returns
    -------
    ModelSelection

    Notes
    -----
    **One dimension.** With one feature every structure is one of two models: mclust's
    "E" (one variance shared by all components: "tied" and every code starting with E)
    and "V" (one variance per component: "full", "diag", "spherical" and every code
    starting with V). Only one of each is fitted (the first requested stands for it), the
    table's ``mclust`` column reads "E" or "V", and :attr:`ModelSelection.collapsed` says
    which requested structures were merged. The default fits them as "tied" and "full".

    **Degenerate cells.** A cell whose best start warns
    :class:`~bayes_gmm.em.DegenerateFitWarning` (a component collapsing onto a point or a
    line) is reported as failed: its likelihood is unbounded, so its criteria mean nothing.

    Examples
    --------
    >>> from bayes_gmm import select_model
    >>> from bayes_gmm.datasets import load_faithful
    >>> sel = select_model(load_faithful(), random_state=0)
    >>> sel.best_params
    ('EEE', 3)
    >>> round(sel.best_score, 1)
    2314.3
    >>> sel.criterion_table().shape  # K = 1..9 x mclust's 14 models
    (9, 14)
    """
    if _dask.is_dask_collection(X):  # the grid on a sample, finished on all blocks
        return _dask.select_model(
            X,
            n_components=n_components,
            covariance_types=covariance_types,
            criterion=criterion,
            prior=prior,
            n_init=n_init,
            random_state=random_state,
            sample_weight=sample_weight,
            tol=tol,
            reg_covar=reg_covar,
            max_iter=max_iter,
            refine=refine,
            verbose=verbose,
            missing=missing,
        )
    criterion = check_criterion(criterion)
    ks, types = _check_grid(n_components, covariance_types)
    n_init = check_int(n_init, "n_init", 1)
    tol = check_real(tol, "tol", 0.0)
    reg_covar = check_real(reg_covar, "reg_covar", 0.0)
    max_iter = check_int(max_iter, "max_iter", 1)
    if refine not in ("contenders", "all"):
        raise ValueError(f'refine must be "contenders" or "all", got {refine!r}.')
    _check_prior(prior)  # up front: a prior EM cannot maximize would fail every cell
    feature_names = None
    if hasattr(X, "columns"):
        names = np.asarray(X.columns, dtype=object)
        if all(isinstance(c, str) for c in names):
            feature_names = names
    if missing not in ("error", "em"):
        raise ValueError(f'missing must be "error" or "em", got {missing!r}.')
    Xa = check_data(X, min_samples=2, allow_nan=missing == "em")
    Xa = np.ascontiguousarray(Xa, dtype=np.float64)
    n_samples, n_features = Xa.shape
    w = check_sample_weight(sample_weight, n_samples)
    X_missing = None
    if missing == "em" and np.isnan(Xa).any():
        _missing.check_missing_rows(Xa)
        X_missing, Xa = Xa, _missing.impute_column_means(Xa, w)
    warn_constant_columns(Xa, feature_names, stacklevel=2)
    entropy = grid.seed_entropy(random_state)

    if types is None:
        types = list(default_covariance_types(n_features))
    types, collapsed = _collapse(types, n_features)
    names = {t: get_structure(t).display_name(n_features == 1) for t in types}

    data = grid.make_data(Xa, w, reg_covar)
    sub = data
    if n_samples > SUBSAMPLE_SIZE:
        # Starts are explored on a subsample (as mclust initializes on one): the best start
        # of each cell is then run on all the data.
        rng = np.random.default_rng(grid.seed(entropy, 0, 0, 1))
        rows = np.sort(rng.choice(n_samples, SUBSAMPLE_SIZE, replace=False))
        if len(np.unique(Xa[rows], axis=0)) >= max(ks):
            sub = grid.make_data(Xa[rows], w[rows], reg_covar)
    settings = {
        "n_init": n_init,
        "entropy": entropy,
        "prior": prior,
        "tol": tol,
        "max_iter": max_iter,
        "criterion": criterion,
        "refine": refine,
    }

    progress = _Progress(len(ks) * len(types), _default_verbose() if verbose is None else verbose)
    t_start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        # One BLAS thread: the products here are small (K x d x d), and threaded BLAS
        # spends more on start-up and contention than it saves (it was several times
        # slower on the 1e5 x 5 case of bench_selection.py on a busy 2-core machine).
        stack.enter_context(g.single_threaded())
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("ignore", DataWarning)  # said once above, not once per fit
        warnings.simplefilter("ignore", ConvergenceWarning)  # the table says it instead
        stack.callback(progress.close)
        cells, estimators = _run_grid(data, sub, ks, types, names, settings, progress)
        if X_missing is not None:
            _finish_on_observed(cells, estimators, X_missing, w, tol)
    if feature_names is not None:
        for est in estimators.values():
            est.feature_names_in_ = feature_names

    return ModelSelection(
        _table([cells[(t, k)] for t in types for k in ks]),
        criterion,
        estimators,
        n_samples,
        n_features,
        collapsed=collapsed,
        elapsed=time.perf_counter() - t_start,
    )
