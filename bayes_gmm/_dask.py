"""EM on Dask collections: data larger than one machine's memory, or spread over a cluster.

Every EM iteration is one map-reduce over the blocks of rows: each block computes its
sufficient statistics with the in-memory E-step (:func:`bayes_gmm._blockstats.
block_statistics`), the statistics are summed in a tree, and only they (a few K x d x d
arrays) reach the client, which takes the M-step. X is never gathered.

The work runs on whatever Dask scheduler is active: a ``dask.distributed.Client``
connected to a cluster (``Client("tcp://scheduler:8786")``, or a ``LocalCluster``), or
Dask's default threads. To use a cluster, create the client before calling ``fit``::

    from dask.distributed import Client
    client = Client("tcp://scheduler-address:8786")
    X = dask.array.from_zarr("s3://bucket/data.zarr")       # or dask.dataframe.read_parquet
    gm = GaussianMixture(8, random_state=0).fit(X)           # the workers read the blocks
    labels = gm.predict(X)                                   # lazy: a dask array

Starts: one pass over the data computes the center, the checks and a uniform sample of
at most ``SAMPLE_SIZE`` rows (bottom-k of per-row random keys, weighted by Efraimidis &
Spirakis when there are sample weights, so the sample is drawn in that same pass without
knowing n). Every initialization (``n_init``, ``init_params``) is run to convergence on
the sample in memory; the best ``N_FINISH`` then run EM on the full data, all in the
same passes. ``n_passes_`` reports how many passes over the data the fit took.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import numbers
import os
import sys
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state

from bayes_gmm import _gaussian as g
from bayes_gmm import _missing
from bayes_gmm._blockstats import block_statistics, log_norm_and_resp
from bayes_gmm.structures import canonical_name, get_structure, layout_of

__all__ = ["N_FINISH", "SAMPLE_SIZE", "is_dask_collection"]

#: Most rows in the uniform sample the starts are explored on.
SAMPLE_SIZE = 100_000
#: How many of the best starts (on the sample) run EM on the full data.
N_FINISH = 2


def is_dask_collection(X):
    """Whether ``X`` is a Dask array or DataFrame (without importing Dask otherwise)."""
    module = type(X).__module__
    return module.startswith("dask.") or module.startswith("dask_expr")


# --------------------------------------------------------------------------- validation
def as_dask_array(X, name="X"):
    """A 2-D float64 Dask array with one chunk of columns, and the column names (or None).

    Validation is lazy where it must read the data (NaN, inf: checked in the first pass)
    and immediate for what the metadata tells (dtypes, dimensions, chunk sizes).
    """
    import dask.array as da

    names = None
    if hasattr(X, "columns"):  # a Dask DataFrame
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        bad = [
            f"{col} ({dt})"
            for col, dt in X.dtypes.items()
            if not (is_numeric_dtype(dt) or is_bool_dtype(dt))
        ]
        if bad:
            raise ValueError(
                f"{name} has non-numeric column(s) {', '.join(bad)}; select the numeric "
                "columns first (e.g. `df.select_dtypes('number')`)."
            )
        if len(X.columns) == 0:
            raise ValueError(f"{name} has 0 columns; pass at least one numeric column.")
        column_names = np.asarray(X.columns, dtype=object)
        if all(isinstance(c, str) for c in column_names):
            names = column_names
        X = X.to_dask_array().astype(np.float64)  # row chunks unknown: not needed here
    elif isinstance(X, da.Array):
        if X.dtype.kind not in "biuf":
            raise ValueError(
                f"{name} has dtype {X.dtype}; pass a numeric Dask array (cast it with "
                "`X.astype(float)`)."
            )
        if X.ndim != 2:
            raise ValueError(
                f"{name} must be 2-D (n_samples, n_features), got {X.ndim} dimension(s); "
                "reshape it, e.g. `X[:, None]` for one feature."
            )
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError(
                f"{name} has unknown chunk sizes (as after boolean indexing); call "
                f"`{name}.compute_chunk_sizes()` first."
            )
        if X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(
                f"{name} is empty (shape {X.shape}); pass at least one row and column."
            )
        X = X.astype(np.float64)
    else:
        raise TypeError(f"{name} must be a dask.array.Array or a dask.dataframe.DataFrame.")
    if np.isnan(X.shape[1]):
        raise ValueError(f"{name} has an unknown number of columns.")
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X, names


def _weight_blocks(sample_weight, X):
    """Delayed blocks of the sample weights aligned with X's row blocks, or Nones."""
    import dask.array as da

    n_blocks = len(X.chunks[0])
    if sample_weight is None:
        return [None] * n_blocks
    if isinstance(sample_weight, numbers.Number):
        if not (sample_weight > 0 and np.isfinite(sample_weight)):
            raise ValueError(f"sample_weight must be positive, got {sample_weight!r}.")
        return [None] * n_blocks  # a constant weight changes nothing in EM
    if hasattr(sample_weight, "to_dask_array"):
        sample_weight = sample_weight.to_dask_array()
    if not isinstance(sample_weight, da.Array):
        if any(np.isnan(c) for c in X.chunks[0]):
            raise ValueError(
                "sample_weight for a Dask DataFrame must be a Dask Series or array with the "
                "DataFrame's partitions (e.g. a column of it)."
            )
        sample_weight = da.from_array(np.asarray(sample_weight, dtype=np.float64), X.chunks[0])
    if sample_weight.ndim != 1:
        raise ValueError(f"sample_weight must be 1-D, got {sample_weight.ndim} dimensions.")
    if sample_weight.numblocks[0] != n_blocks or (
        not any(np.isnan(c) for c in X.chunks[0]) and sample_weight.chunks[0] != X.chunks[0]
    ):
        if any(np.isnan(c) for c in X.chunks[0]) or sample_weight.shape[0] != X.shape[0]:
            raise ValueError(
                f"sample_weight has {sample_weight.numblocks[0]} block(s) of rows but X has "
                f"{n_blocks}; pass weights chunked as X's rows."
            )
        sample_weight = sample_weight.rechunk((X.chunks[0],))
    return list(sample_weight.astype(np.float64).to_delayed().ravel())


# --------------------------------------------------------------------------- worker heap
# glibc's mallopt parameters and defaults.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_DEFAULT_MMAP_THRESHOLD = 128 * 1024
#: While a block is processed: temporaries up to this size come from the heap ...
_BLOCK_MMAP_THRESHOLD = 64 * 2**20
#: ... and this much free heap is kept between them instead of being returned.
_BLOCK_TRIM_THRESHOLD = 256 * 2**20
_heap_lock = threading.Lock()
_heap_users = [0]


@functools.cache
def _glibc():
    """glibc's ``mallopt`` and ``malloc_trim``, or None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:  # pragma: no cover
        return None


@contextlib.contextmanager
def _reused_heap():
    """Let a block's temporaries reuse heap memory, as they do in an ordinary process.

    Dask's nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (its config
    ``distributed.nanny.pre-spawn-environ``). Setting it also fixes glibc's mmap
    threshold at 128 KiB, so every ~2 MB temporary of the chunked E-step was mapped,
    page-faulted and unmapped again, chunk after chunk: the workers used 4x the CPU of
    the same E-step in memory, half of it in the kernel (``bench_dask.py`` (a) at 1e6).
    Inside this context the heap serves temporaries up to 64 MB and keeps up to 256 MB
    free; on leaving it the worker's own settings come back and the free heap is returned
    to the system, so the worker's memory between tasks is what it was. Processes not
    started with fixed thresholds (the client, Dask's local threads) are left alone:
    glibc's adaptive threshold already reuses their heap.
    """
    libc = _glibc()
    fixed = "MALLOC_TRIM_THRESHOLD_" in os.environ or "MALLOC_MMAP_THRESHOLD_" in os.environ
    if libc is None or not fixed:
        yield
        return
    with _heap_lock:
        _heap_users[0] += 1
        if _heap_users[0] == 1:
            libc.mallopt(_M_MMAP_THRESHOLD, _BLOCK_MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _BLOCK_TRIM_THRESHOLD)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_users[0] -= 1
            if _heap_users[0] == 0:
                mmap = os.environ.get("MALLOC_MMAP_THRESHOLD_", _DEFAULT_MMAP_THRESHOLD)
                trim = os.environ.get("MALLOC_TRIM_THRESHOLD_", 2 * int(mmap))
                libc.mallopt(_M_MMAP_THRESHOLD, int(mmap))
                libc.mallopt(_M_TRIM_THRESHOLD, int(trim))
                libc.malloc_trim(0)


# --------------------------------------------------------------------------- map-reduce
def _tree_sum(parts, add):
    """Sum delayed values pairwise, so no task receives more than two inputs."""
    import dask

    add = dask.delayed(add, pure=True)
    while len(parts) > 1:
        parts = [
            add(*parts[i : i + 2]) if i + 1 < len(parts) else parts[i]
            for i in range(0, len(parts), 2)
        ]
    return parts[0]


def _add_lists(a, b):
    for x, y in zip(a, b, strict=True):
        x += y
    return a


def _block_statistics_many(X, w, center, params):
    with _reused_heap():
        return [block_statistics(X, w, center, *p) for p in params]


def _statistics_pass(blocks, weights, center, params):
    """One pass: the summed statistics of every parameter set in ``params``.

    ``params``: (weights, centered means, precision factors, covariances, covariance type).
    """
    import dask

    task = dask.delayed(_block_statistics_many, pure=True)
    parts = [task(b, w, center, params) for b, w in zip(blocks, weights, strict=True)]
    (total,) = dask.compute(_tree_sum(parts, _add_lists))
    return total


@dataclass
class _Scan:
    """What the first pass learns: counts, moments, missing values and a sample."""

    n_rows: int
    total_weight: float
    weighted_sum: np.ndarray
    observed_weight: np.ndarray
    sum_squares: np.ndarray
    n_empty_rows: int
    n_nan: int
    n_inf: int
    keys: np.ndarray
    sample: np.ndarray
    sample_weight: np.ndarray = field(default=None)


def _smallest(keys, size):
    """Indices of the ``size`` smallest keys, in increasing order of key."""
    if keys.size > size:
        keys_part = np.argpartition(keys, size - 1)[:size]
        return keys_part[np.argsort(keys[keys_part], kind="stable")]
    return np.argsort(keys, kind="stable")


def _scan_block(X, w, seed, size):
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    w = np.ones(n) if w is None else np.asarray(w, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"sample_weight block has shape {w.shape}, X block has {n} rows.")
    if np.any(w < 0) or not np.all(np.isfinite(w)):
        raise ValueError("sample_weight must be finite and non-negative.")
    d = X.shape[1]
    if np.isfinite(X).all():  # the usual block: no masks, no filled copy
        nan = inf = np.zeros((0, d), dtype=bool)
        observed_weight = np.full(d, float(w.sum()))
        filled = X
    else:
        nan = np.isnan(X)
        inf = np.isinf(X)
        observed = ~nan & ~inf
        observed_weight = w @ observed
        filled = np.where(observed, X, 0.0)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore"):
        # Efraimidis & Spirakis: the k largest u ** (1 / w) are a weighted sample without
        # replacement; we keep the k smallest -log(u) / w, the same order.
        keys = -np.log(rng.random(n)) / w
    keep = _smallest(keys, size)
    keep = keep[np.isfinite(keys[keep])]
    return _Scan(
        n_rows=n,
        total_weight=float(w.sum()),
        weighted_sum=w @ filled,
        observed_weight=observed_weight,
        sum_squares=np.einsum("i,ij,ij->j", w, filled, filled),
        n_empty_rows=int(np.count_nonzero(nan.all(axis=1))),
        n_nan=int(np.count_nonzero(nan)),
        n_inf=int(np.count_nonzero(inf)),
        keys=keys[keep],
        sample=X[keep],
    )


def _merge_scans(a, b, size=None):
    keys = np.concatenate([a.keys, b.keys])
    sample = np.concatenate([a.sample, b.sample])
    keep = _smallest(keys, size or len(keys))
    return _Scan(
        a.n_rows + b.n_rows,
        a.total_weight + b.total_weight,
        a.weighted_sum + b.weighted_sum,
        a.observed_weight + b.observed_weight,
        a.sum_squares + b.sum_squares,
        a.n_empty_rows + b.n_empty_rows,
        a.n_nan + b.n_nan,
        a.n_inf + b.n_inf,
        keys[keep],
        sample[keep],
    )


def _scan(blocks, weights, seed, size):
    import dask

    task = dask.delayed(_scan_block, pure=True)
    parts = [
        task(b, w, (seed, i), size) for i, (b, w) in enumerate(zip(blocks, weights, strict=True))
    ]
    (scan,) = dask.compute(_tree_sum(parts, lambda a, b: _merge_scans(a, b, size)))
    return scan


def _check_scan(scan, missing, n_components):
    if scan.n_inf:
        raise ValueError(
            f"X contains {scan.n_inf} infinite value(s); replace them (by NaN if unknown)."
        )
    if scan.n_nan and missing != "em":
        raise ValueError(
            f"X contains {scan.n_nan} NaN value(s); drop those rows first (e.g. "
            '`df.dropna()`), or pass missing="em" to fit with NaN treated as missing at random.'
        )
    empty_cols = np.flatnonzero(scan.observed_weight == 0)
    if empty_cols.size:
        raise ValueError(
            f"X has column(s) {empty_cols.tolist()} with every value missing; drop those columns."
        )
    if scan.n_empty_rows:
        raise ValueError(
            f"X has {scan.n_empty_rows} row(s) with every value missing; drop them first "
            "(e.g. `df.dropna(how='all')`)."
        )
    if scan.n_rows < 2 or scan.n_rows < n_components:
        raise ValueError(
            f"X has {scan.n_rows} row(s); at least max(2, n_components={n_components}) are needed."
        )
    if scan.total_weight <= 0:
        raise ValueError("sample_weight is zero for every sample; there is nothing to fit.")


# --------------------------------------------------------------------------- fit
@dataclass
class _DaskRun:
    """One EM run on the full data (centered frame), read by the estimator's ``_store``."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    prec_chol: np.ndarray
    ctype: str
    reg_covar: float
    prior: object  # CenteredPrior or None
    log_prior: object  # run -> float
    objective: float = -np.inf
    history: list = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    done: bool = False
    previous: float = -np.inf
    converging: bool = False
    repaired: dict = field(default_factory=dict)
    emptied: set = field(default_factory=set)


def _starts(est, sample, rng):
    """Initial parameters (data frame): fitted on the sample, best first, at most N_FINISH."""
    K = est.n_components
    given = (est.weights_init, est.means_init, est.precisions_init)
    if all(v is not None for v in given):
        with warnings.catch_warnings():  # only to validate the parameters against the data
            warnings.simplefilter("ignore")
            clone(est).set_params(max_iter=0, n_init=1, warm_start=False).fit(sample)
        covs = g.covariances_from_precisions(
            np.asarray(est.precisions_init, float), est.covariance_type
        )
        return [(np.asarray(est.weights_init, float), np.asarray(est.means_init, float), covs)]
    if est.warm_start and hasattr(est, "converged_"):
        return [(est.weights_, est.means_, est.covariances_)]
    if sample.shape[0] < max(2, K):
        raise ValueError(f"The sample has {sample.shape[0]} rows, fewer than n_components={K}.")
    fits = []
    for _ in range(est.n_init):
        local = clone(est).set_params(
            n_init=1, warm_start=False, verbose=0, random_state=rng.randint(2**31 - 1)
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            local.fit(sample)
        fits.append(local)
    fits.sort(key=lambda f: -f.log_likelihood_)
    starts = [(f.weights_, f.means_, f.covariances_) for f in fits[:N_FINISH]]
    return starts


def _em(blocks, weights, center, runs, max_iter, tol, verbose=0, verbose_interval=10):
    """EM for every run at once: one pass over the data per iteration. Returns the passes.

    ``tol`` is the absolute threshold on the change of the objective (tol x total weight).
    """
    passes = 0
    for iteration in range(max_iter + 1):
        active = [r for r in runs if not r.done]
        if not active:
            break
        params = [(r.weights, r.means, r.prec_chol, r.covariances, r.ctype) for r in active]
        all_stats = _statistics_pass(blocks, weights, center, params)
        passes += 1
        for run, stats in zip(active, all_stats, strict=True):
            ctype = run.ctype
            objective = stats.log_likelihood + run.log_prior(run)
            run.history.append(objective)
            if verbose >= 2 and iteration % verbose_interval == 0:
                print(f"  Iteration {iteration}: objective {objective:.6f}")
            if run.converging or iteration == max_iter:
                run.converged, run.done = run.converging, True
                continue
            run.converging = abs(objective - run.previous) < tol
            run.previous = objective
            new_w, new_m, new_c = g.from_summaries(
                stats, ctype, run.reg_covar, run.prior, previous=run.covariances
            )
            empty = stats.weight <= 1e-12 * stats.total_weight
            if run.prior is None and empty.any():  # 0 / 0: freeze, as the in-memory EM does
                new_m[empty] = run.means[empty]
                if layout_of(ctype) != "tied":
                    new_c[empty] = run.covariances[empty]
                run.emptied.update(int(k) for k in np.flatnonzero(empty))
            prec_chol, new_c, repaired = g.precision_cholesky(new_c, ctype)
            run.repaired.update(repaired)
            run.weights, run.means, run.covariances, run.prec_chol = new_w, new_m, new_c, prec_chol
            run.n_iter = iteration + 1
    for run in runs:
        run.objective = run.history[-1]
    return passes


def _new_run(weights, means, covariances, center, ctype, reg_covar, prior, log_prior):
    """A run from parameters in the data's frame."""
    ctype = canonical_name(ctype)
    if not get_structure(ctype).is_sklearn:
        reg_covar = 0.0  # as the in-memory EM: mclust's models keep their structure
    prec_chol, covs, _ = g.precision_cholesky(np.asarray(covariances, dtype=float), ctype)
    means = np.asarray(means, dtype=float) - center
    return _DaskRun(
        np.asarray(weights, float), means, covs, prec_chol, ctype, reg_covar, prior, log_prior
    )


def _prior_terms(resolved, center):
    """The centered prior for the M-step and the log prior density of a run."""
    if resolved is None:
        return None, lambda run: 0.0
    prior = g.CenteredPrior.from_resolved(resolved, center)
    return prior, lambda run: resolved.log_density(run.weights, run.means + center, run.covariances)


def fit(est, X, sample_weight=None):
    """``GaussianMixture.fit`` on a Dask collection (see the module docstring)."""
    if est.missing not in ("error", "em"):
        raise ValueError(f'missing must be "error" or "em", got {est.missing!r}.')
    Xd, names = as_dask_array(X)
    d = Xd.shape[1]
    blocks = list(Xd.to_delayed().ravel())
    weights = _weight_blocks(sample_weight, Xd)
    rng = check_random_state(est.random_state)
    scan = _scan(blocks, weights, rng.randint(2**31 - 1), SAMPLE_SIZE)
    _check_scan(scan, est.missing, est.n_components)
    center = scan.weighted_sum / scan.observed_weight
    # the sample carries the weights through its selection, so it is fitted unweighted
    starts = _starts(est, scan.sample, rng)

    ctype = est.covariance_type
    prior_ = None
    if est.prior is not None:  # data-driven hyperparameters from the sample
        sample = scan.sample
        if np.isnan(sample).any():
            sample = _missing.impute_column_means(sample)
        prior_ = est.prior.resolve(sample, est.n_components, ctype)
    prior, log_prior = _prior_terms(prior_, center)

    runs = [
        _new_run(w0, m0, c0, center, ctype, est.reg_covar, prior, log_prior)
        for w0, m0, c0 in starts
    ]
    tol = est.tol * scan.total_weight
    passes = 1 + _em(
        blocks, weights, center, runs, est.max_iter, tol, est.verbose, est.verbose_interval
    )
    best = max(runs, key=lambda r: r.objective)
    if not best.converged and est.max_iter > 0:
        warnings.warn(
            f"EM on the Dask data did not converge in max_iter={est.max_iter} iterations; "
            "increase max_iter or loosen tol.",
            ConvergenceWarning,
            stacklevel=3,
        )
    from bayes_gmm.em import _DataScale  # em imports this module

    variances = scan.sum_squares / scan.observed_weight - center**2
    data_scale = _DataScale.known(float(np.max(variances)) or 1.0)
    est._warn_degenerate(best, data_scale)  # as fit warns in memory
    est._store_run(best, center, scan.total_weight, d, prior_)
    est.init_log_likelihoods_ = np.asarray([r.objective for r in runs])
    est.n_passes_ = passes
    if names is not None:
        est.feature_names_in_ = names
    return est


# --------------------------------------------------------------------------- predict
def check_predict_input(est, X):
    """The Dask array of ``X`` after checking it against the fitted estimator."""
    from sklearn.utils.validation import check_is_fitted

    check_is_fitted(est)
    Xd, _ = as_dask_array(X)
    if Xd.shape[1] != est.n_features_in_:
        raise ValueError(
            f"X has {Xd.shape[1]} features, but GaussianMixture is expecting "
            f"{est.n_features_in_} features as input."
        )
    return Xd


def _block_predict(X, weights, means, prec_chol, covariances, ctype, missing):
    if missing != "em" and np.isnan(X).any():
        raise ValueError(
            'X contains NaN; drop those rows first, or fit with missing="em" to predict on rows '
            "with missing values."
        )
    with _reused_heap():
        return log_norm_and_resp(X, weights, means, prec_chol, covariances, ctype)


def log_norm_and_resp_lazy(est, Xd):
    """Lazy ``(log_norm, resp)`` Dask arrays of a fitted estimator on ``Xd``."""
    K = est.n_components
    out = Xd.map_blocks(
        _block_predict,
        est.weights_,
        est.means_,
        est.precisions_cholesky_,
        est.covariances_,
        est.covariance_type,
        est.missing,
        dtype=np.float64,
        chunks=(Xd.chunks[0], (K + 1,)),
        meta=np.empty((0, 0)),
    )
    return out[:, 0], out[:, 1:]


def criteria_sums(est, Xd, sample_weight=None):
    """``(sum w log p(x), sum w, sum w log max_k r_k)`` on Dask data, in one pass."""
    import dask

    log_norm, resp = log_norm_and_resp_lazy(est, Xd)
    with np.errstate(divide="ignore"):
        log_top = np.log(resp.max(axis=1))
    if sample_weight is None:
        # the row count in the same compute: a DataFrame's row chunks are unknown
        loglik, top, n = dask.compute(log_norm.sum(), log_top.sum(), (log_norm * 0 + 1).sum())
    else:
        w = (
            sample_weight.to_dask_array()
            if hasattr(sample_weight, "to_dask_array")
            else sample_weight
        )
        loglik, top, n = dask.compute((w * log_norm).sum(), (w * log_top).sum(), w.sum())
    return loglik, n, top


# --------------------------------------------------------------------------- select_model
def _block_criteria_many(X, w, params):
    out = []
    for weights, means, prec_chol, covs, ctype in params:
        with _reused_heap():
            lr = log_norm_and_resp(X, weights, means, prec_chol, covs, ctype)
        with np.errstate(divide="ignore"):
            top = np.log(lr[:, 1:].max(axis=1))
        w_ = np.ones(len(lr)) if w is None else np.asarray(w, dtype=np.float64)
        out.append(np.array([w_ @ lr[:, 0], w_ @ top]))
    return out


def select_model(
    X,
    *,
    n_components,
    covariance_types,
    criterion,
    prior,
    n_init,
    random_state,
    sample_weight,
    tol,
    reg_covar,
    max_iter,
    refine,
    verbose,
    missing,
):
    """:func:`bayes_gmm.select_model` on a Dask collection.

    The grid (its starts and exploratory EM) runs on the uniform sample of the first pass;
    then every fitted cell runs EM on the full data from its sample optimum, all cells in
    the same passes, and one last pass computes every cell's criteria on the full data.
    """
    import time

    import dask

    from bayes_gmm.em import criteria_from_sums
    from bayes_gmm.selection import ModelSelection
    from bayes_gmm.selection import select_model as select_in_memory

    t_start = time.perf_counter()
    Xd, names = as_dask_array(X)
    d = Xd.shape[1]
    blocks = list(Xd.to_delayed().ravel())
    weights = _weight_blocks(sample_weight, Xd)
    rng = check_random_state(random_state)
    scan = _scan(blocks, weights, rng.randint(2**31 - 1), SAMPLE_SIZE)
    ks = [n_components] if isinstance(n_components, numbers.Integral) else list(n_components)
    _check_scan(scan, missing, max(ks))
    center = scan.weighted_sum / scan.observed_weight
    sel = select_in_memory(
        scan.sample,
        n_components=n_components,
        covariance_types=covariance_types,
        criterion=criterion,
        prior=prior,
        n_init=n_init,
        random_state=rng.randint(2**31 - 1),
        tol=tol,
        reg_covar=reg_covar,
        max_iter=max_iter,
        refine=refine,
        verbose=verbose,
        missing=missing,
    )
    keys = list(sel.estimators)
    runs = []
    for key in keys:
        est = sel.estimators[key]
        prior_c, log_prior = _prior_terms(est.prior_, center)
        runs.append(
            _new_run(
                est.weights_,
                est.means_,
                est.covariances_,
                center,
                est.covariance_type,
                reg_covar,
                prior_c,
                log_prior,
            )
        )
    passes = 1 + _em(blocks, weights, center, runs, max_iter, tol * scan.total_weight)
    params = [(r.weights, r.means + center, r.prec_chol, r.covariances, r.ctype) for r in runs]
    task = dask.delayed(_block_criteria_many, pure=True)
    parts = [task(b, w, params) for b, w in zip(blocks, weights, strict=True)]
    (sums,) = dask.compute(_tree_sum(parts, _add_lists)) if parts else ([],)
    passes += 1
    table = sel.table.copy()
    index = {(r.covariance_type, r.n_components): i for i, r in table.iterrows()}
    n = scan.total_weight
    for key, run, (loglik, top) in zip(keys, runs, sums, strict=True):
        est = sel.estimators[key]
        est._store_run(run, center, n, d, est.prior_)
        est.n_passes_ = passes
        if names is not None:
            est.feature_names_in_ = names
        i = index[key]
        criteria = criteria_from_sums(loglik, n, top, est.n_parameters())
        for name, value in criteria.items():
            table.loc[i, name] = value
        table.loc[i, "converged"] = run.converged
        table.loc[i, "n_iter"] = int(table.loc[i, "n_iter"]) + run.n_iter
        table.loc[i, "tol"] = tol
    result = ModelSelection(
        table,
        criterion,
        sel.estimators,
        scan.n_rows,
        d,
        collapsed=sel.collapsed,
        elapsed=time.perf_counter() - t_start,
    )
    result.n_passes = passes
    return result
