"""The E-step of ``GaussianMixture.fit`` on in-memory rows: responsibilities and
sufficient statistics, streamed chunk by chunk by the worker threads.

:class:`Context` holds what one fit's E-steps share (the centered frame, stored features,
chunk size); :func:`e_step` runs one. Large fits (``COMPILED_E_STEP_MIN_ENTRIES``) go
through the compiled ``_em_kernel.chunk_statistics``, which leaves negligible
responsibilities out of the moments; :func:`e_step` adds back those of any component for
which they are not negligible (:func:`_left_out_statistics`).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm import _missing
from bayes_gmm.structures import get_layout, layout_of

#: "full" features at least this wide are computed chunk by chunk, not stored, in the
#: compiled E-step (d >= 7).
ON_THE_FLY_MIN_WIDTH = 35
#: Narrower features than this have their moments summed by BLAS over every
#: responsibility (for a few dozen columns the per-row updates cost more: spherical at
#: d = 32, width 33, took 15% longer in benchmarks/bench_em.py; diag's width 64 was even).
SPARSE_MOMENTS_MIN_WIDTH = 48
#: The compiled E-step serves fits with at least this many (row, component) pairs; on
#: less, numba's import and first call would cost more than it saves.
COMPILED_E_STEP_MIN_ENTRIES = 2**16
#: The compiled E-step leaves the responsibilities below this out of the moments (their
#: sum is checked against ``SKIPPED_RELATIVE``).
SKIPPED_THRESHOLD = 1e-20
#: When the rows are split over worker threads, the E-step cuts them into tasks of this
#: many chunks, which the workers take in turn (a worker that falls behind, its core
#: shared for a while with another thread, takes fewer); the tasks' statistics are added
#: in row order, so results do not depend on which worker ran what.
CHUNKS_PER_TASK = 2
#: If a component's left-out responsibilities add up to more than this fraction of its
#: weight, their moments are added (:func:`_left_out_statistics`): below it, what was
#: left out changes the M-step's sums less than their own rounding.
SKIPPED_RELATIVE = 1e-17


@dataclass
class Context:
    """Everything about one ``fit`` call that does not change between iterations."""

    X: np.ndarray
    w: np.ndarray
    center: np.ndarray
    ctype: str
    reg_covar: float
    prior: object
    rows: int
    K: int
    tied_moment: np.ndarray = None
    features: np.ndarray = None
    unit_weights: bool = False
    #: Whether the E-step's chunks go through the compiled ``_em_kernel.chunk_statistics``.
    compiled: bool = False
    #: The centered rows with NaN for missing values (``missing="em"``); ``X`` is then imputed.
    missing: np.ndarray = None
    #: Whether the compiled E-step sums the moments over the responsibilities of at least
    #: ``SKIPPED_THRESHOLD`` only (features at least ``SPARSE_MOMENTS_MIN_WIDTH`` wide).
    sparse_moments: bool = False
    #: Each row's largest log-density and ``w_i`` over its sum of exponentials, as the
    #: sparse moments' E-step leaves them (:func:`_left_out_statistics` reads them).
    row_top: np.ndarray = None
    row_scale: np.ndarray = None

    def __post_init__(self):
        n, d = self.X.shape
        layout = get_layout(self.ctype)
        self.unit_weights = bool(np.all(self.w == 1.0))
        self.compiled = not layout.shared and n * self.K >= COMPILED_E_STEP_MIN_ENTRIES
        width = g.feature_width(d, self.ctype)
        self.sparse_moments = self.compiled and width >= SPARSE_MOMENTS_MIN_WIDTH
        if self.sparse_moments:
            self.row_top, self.row_scale = np.empty(n), np.empty(n)
        # The compiled E-step computes the features chunk by chunk, in cache, faster than
        # it reads stored ones from memory (twice per iteration), but for "full" on few
        # columns (d = 2: a few products per row, less than the per-row work around them).
        on_the_fly = self.compiled and (not layout.stores_matrices or width >= ON_THE_FLY_MIN_WIDTH)
        if n * width * 8 <= g.FEATURE_CACHE_BYTES and not on_the_fly:
            # The narrow features of "diag" and "spherical" are stored column by column:
            # BLAS multiplies a chunk's (width, rows) slice 5-20% faster than the transpose
            # of a (rows, width) one (benchmarks/bench_em.py); for "full" it is no faster.
            if not layout.stores_matrices:
                features = np.empty((width, n)).T
            else:
                features = np.empty((n, width))

            def fill(block):  # chunk by chunk: bounded temporaries
                for start in range(*block, self.rows):
                    stop = min(start + self.rows, block[1])
                    X = self.X[start:stop] - self.center
                    g.features(X, self.ctype, out=features[start:stop])

            blocks = self.row_blocks()
            if len(blocks) == 1:
                fill(blocks[0])
            else:  # one block per worker thread (numpy releases the GIL)
                g.share_out(lambda i: fill(blocks[i]), len(blocks), len(blocks))
            self.features = features
        if layout.shared:
            self.tied_moment = sum(
                g.weighted_second_moment(feats, self.w[start:stop])
                for start, stop, feats in self.chunks()
            )

    def chunks(self, first=0, last=None):
        """Yield ``(start, stop, features)`` over the rows ``first:last``."""
        last = self.X.shape[0] if last is None else last
        for start in range(first, last, self.rows):
            stop = min(start + self.rows, last)
            if self.features is not None:
                yield start, stop, self.features[start:stop]
            else:
                yield start, stop, g.features(self.X[start:stop] - self.center, self.ctype)

    def row_blocks(self):
        """Contiguous row ranges, one per worker thread (fixed, so results are reproducible)."""
        n = self.X.shape[0]
        workers = g.n_workers(n, self.rows)
        edges = [(n * i // workers) // self.rows * self.rows for i in range(workers)] + [n]
        return [(a, b) for a, b in itertools.pairwise(edges) if b > a]

    def tasks(self):
        """Contiguous row ranges of ``CHUNKS_PER_TASK`` chunks, for the worker threads to
        take in turn (fixed by the rows and chunk size only, so results are reproducible
        and the same for any number of workers)."""
        n, step = self.X.shape[0], self.rows * CHUNKS_PER_TASK
        return [(start, min(start + step, n)) for start in range(0, n, step)]


def e_step(ctx, weights, means, prec_chol, moments=True):
    """Responsibilities and sufficient statistics over all rows.

    With several workers (``_gaussian.n_workers``), the rows are cut into fixed tasks of
    ``CHUNKS_PER_TASK`` chunks that the worker threads take in turn (numpy and the
    compiled kernel release the GIL); the tasks' statistics are added in row order. With
    ``moments=False`` only the log-likelihood is wanted (the last E-step of a
    run): the statistics are then left at zero.
    """
    if ctx.missing is not None:
        layout = layout_of(ctx.ctype)  # _missing works on the four storage layouts
        covariances = _missing.covariances_from_cholesky(prec_chol, layout)
        return _missing.expected_statistics(ctx.missing, ctx.w, weights, means, covariances, layout)
    eta, const = g.natural_parameters(means, prec_chol, ctx.ctype)
    with np.errstate(divide="ignore"):
        const = const + np.log(weights)
    stats, skipped = _e_step_blocks(ctx, eta, const, prec_chol, moments, ctx.compiled)
    if skipped is not None:
        # Components whose left-out responsibilities are not negligible against their
        # weight (a light one, or one that is emptying): their left-out moments are added.
        left_out = np.flatnonzero(skipped > SKIPPED_RELATIVE * stats.weight)
        if left_out.size:
            stats += _left_out_statistics(ctx, left_out, eta, const)
    return g.finish_moments(stats, ctx.ctype, ctx.tied_moment)


def _e_step_blocks(ctx, eta, const, prec_chol, moments, compiled):
    """The E-step's statistics added over the worker threads' row blocks, and the sum
    of the responsibilities left out of the moments (``None`` unless ``compiled``)."""
    block_step = _e_step_block_compiled if compiled else _e_step_block
    blocks = ctx.row_blocks()
    if len(blocks) == 1:
        parts = [block_step(ctx, *blocks[0], eta, const, prec_chol, moments)]
    else:
        # Not one block per worker: a worker slowed by a busy core would hold up the
        # E-step. Each worker takes the next task when it is done with one.
        with g.single_threaded():  # one BLAS thread per worker
            tasks = ctx.tasks()
            parts = g.share_out(
                lambda i: block_step(ctx, *tasks[i], eta, const, prec_chol, moments),
                len(tasks),
                len(blocks),
            )
    if compiled:
        skipped = sum(part[1] for part in parts)
        parts = [part[0] for part in parts]
    else:
        skipped = None
    stats = parts[0]
    for part in parts[1:]:
        stats += part
    return stats, skipped


def _e_step_block_compiled(ctx, first, last, eta, const, prec_chol, moments=True):
    """:func:`_e_step_block` with each chunk's responsibilities and moments in compiled
    code (``_em_kernel.chunk_statistics``): one pass over the chunk, negligible
    responsibilities left out of the moments (features at least
    ``SPARSE_MOMENTS_MIN_WIDTH`` wide; narrower ones: every responsibility, by BLAS).
    Returns the statistics and the responsibilities left out per component."""
    from bayes_gmm import _em_kernel  # numba: imported by the fits that use it

    K, m = eta.shape
    d = ctx.X.shape[1]
    top, total = np.empty(ctx.rows), np.empty(ctx.rows)
    bits = np.empty(ctx.rows, dtype=np.int64)
    nk, moments_sum, skipped = np.zeros(K), np.zeros((K, m)), np.zeros(K)
    no_rows = np.empty(0)  # no per-row log-likelihoods wanted
    log_likelihood = 0.0
    dense = not ctx.sparse_moments
    for start, stop, feats in _compiled_chunks(ctx, first, last):
        rows = stop - start
        if not dense:  # kept for _left_out_statistics
            top, total = ctx.row_top[start:stop], ctx.row_scale[start:stop]
        resp = eta @ feats.T
        log_likelihood += _em_kernel.chunk_statistics(
            resp, const, feats, ctx.w[start:stop], ctx.unit_weights,
            SKIPPED_THRESHOLD, moments and not dense, top[:rows], total[:rows], bits[:rows], nk,
            moments_sum, skipped, no_rows,
        )  # fmt: skip
        if moments and dense:
            moments_sum += resp @ feats
    total_weight = float(last - first if ctx.unit_weights else ctx.w[first:last].sum())
    stats = g.statistics_from_moments(nk, moments_sum, ctx.ctype, d, total_weight)
    stats.log_likelihood = log_likelihood
    return stats, skipped


def _compiled_chunks(ctx, first, last):
    """``ctx.chunks(first, last)`` with the features not stored computed by
    ``_em_kernel.features_into`` (into one reused buffer)."""
    from bayes_gmm import _em_kernel

    if ctx.features is not None:
        yield from ctx.chunks(first, last)
        return
    code = _em_kernel.CTYPE_CODES[layout_of(ctx.ctype)]
    work = np.empty((ctx.rows, g.feature_width(ctx.X.shape[1], ctx.ctype)))
    for start in range(first, last, ctx.rows):
        stop = min(start + ctx.rows, last)
        feats = work[: stop - start]
        _em_kernel.features_into(ctx.X[start:stop], ctx.center, code, feats)
        yield start, stop, feats


def _left_out_statistics(ctx, components, eta, const):
    """The moments that the compiled E-step left out for ``components`` (their
    responsibilities below ``SKIPPED_THRESHOLD``), as statistics to add to its own.

    Only these components' log-densities are computed again (one pass over the rows);
    each row's normalization is the one the E-step kept in ``ctx.row_top`` and
    ``ctx.row_scale``. Their weights counted every responsibility already.
    """
    from bayes_gmm import _em_kernel

    K, m = eta.shape
    eta_left, const_left = eta[components], const[components]
    left = np.zeros((len(components), m))
    bits, work = np.empty(ctx.rows, dtype=np.int64), np.empty(ctx.rows)
    for start, stop, feats in _compiled_chunks(ctx, 0, ctx.X.shape[0]):
        rows = stop - start
        _em_kernel.left_out_moments(
            eta_left @ feats.T, const_left, ctx.row_top[start:stop], ctx.row_scale[start:stop],
            feats, ctx.w[start:stop], ctx.unit_weights, SKIPPED_THRESHOLD, bits[:rows],
            work[:rows], left,
        )  # fmt: skip
    moments_sum = np.zeros((K, m))
    moments_sum[components] = left
    return g.statistics_from_moments(np.zeros(K), moments_sum, ctx.ctype, ctx.X.shape[1], 0.0)


def _e_step_block(ctx, first, last, eta, const, prec_chol, moments=True):
    """The statistics of rows ``first:last`` (one worker's block), chunk by chunk.

    With ``moments=False`` only the log-likelihood and the total weight are summed; the
    other sums stay zero.
    """
    K, m = eta.shape
    d = ctx.X.shape[1]
    stats = g.statistics_from_moments(np.zeros(K), np.zeros((K, m)), ctx.ctype, d, 0.0)
    for start, stop, feats in ctx.chunks(first, last):
        lp = g.linear_log_prob(feats, eta, const, ctx.ctype, prec_chol)
        log_norm, resp = g.normalize(lp)
        w = None if ctx.unit_weights else ctx.w[start:stop]
        stats.log_likelihood += float(log_norm.sum() if w is None else w @ log_norm)
        if moments:
            stats += g.summarize(feats, w, resp, ctx.ctype, d)
        else:
            stats.total_weight += float(stop - start if w is None else w.sum())
    return stats
