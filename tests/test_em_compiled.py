"""The compiled E-step of large fits (_e_step._e_step_block_compiled) against the numpy one."""

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from bayes_gmm import GaussianMixture, _e_step
from bayes_gmm import _gaussian as g


def blobs(n, d, K, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 4.0, size=(K, d))
    labels = rng.integers(K, size=n)
    mix = rng.normal(size=(K, d, d)) * 0.1 + np.eye(d)  # well conditioned
    return centers[labels] + np.einsum("nij,nj->ni", mix[labels], rng.standard_normal((n, d)))


def fit(X, ctype, compiled, weights=None, **params):
    """A 15-iteration fit (tol=0) with or without the compiled E-step."""
    gm = GaussianMixture(4, covariance_type=ctype, random_state=0, max_iter=15, tol=0, **params)
    limit = 0 if compiled else np.inf
    paths = []
    original = _e_step._e_step_blocks

    def spy(ctx, eta, const, prec_chol, moments, compiled):
        paths.append(compiled)
        return original(ctx, eta, const, prec_chol, moments, compiled)

    with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
        mp.setattr(_e_step, "COMPILED_E_STEP_MIN_ENTRIES", limit)
        mp.setattr(_e_step, "_e_step_blocks", spy)
        warnings.simplefilter("ignore", ConvergenceWarning)
        fitted = gm.fit(X, sample_weight=weights)
    # The E-step under test ran: otherwise a comparison would set numpy against numpy.
    assert any(paths) == compiled
    return fitted


def assert_same_fit(a, b):
    np.testing.assert_allclose(a.log_likelihood_, b.log_likelihood_, rtol=1e-12)
    np.testing.assert_allclose(a.weights_, b.weights_, rtol=1e-10)
    np.testing.assert_allclose(a.means_, b.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(a.covariances_, b.covariances_, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize(("ctype", "d"), [("full", 3), ("full", 8), ("diag", 3), ("spherical", 3)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_compiled_e_step_equals_numpy(ctype, d, weighted, sparse, monkeypatch):
    """Stored features ("full" on 3 columns) and features computed chunk by chunk; moments
    from the responsibilities above the threshold (sparse) or from all of them."""
    monkeypatch.setattr(_e_step, "SPARSE_MOMENTS_MIN_WIDTH", 0 if sparse else 10**6)
    X = blobs(3000, d, 4)
    weights = np.random.default_rng(1).random(len(X)) * 2 if weighted else None
    assert_same_fit(fit(X, ctype, True, weights), fit(X, ctype, False, weights))


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_compiled_e_step_two_threads(ctype, monkeypatch):
    X = blobs(6000, 3, 4, seed=2)
    monkeypatch.setattr(_e_step, "SPARSE_MOMENTS_MIN_WIDTH", 0)
    monkeypatch.setattr(g, "CHUNK_ELEMENTS", 2048)  # many chunks: two worker blocks
    monkeypatch.setattr(g, "N_WORKERS", 2)
    assert_same_fit(fit(X, ctype, True), fit(X, ctype, False))


def test_e_step_tasks_do_not_depend_on_workers(monkeypatch):
    """Split over threads, the rows go in fixed tasks (CHUNKS_PER_TASK chunks each) added
    in row order: two, three or four workers give the same fit, bit for bit."""
    X = blobs(6000, 3, 4, seed=2)
    monkeypatch.setattr(g, "CHUNK_ELEMENTS", 2048)  # 341-row chunks: 18, in 9 tasks
    fits = []
    for workers in (2, 3, 4):
        monkeypatch.setattr(g, "N_WORKERS", workers)
        fits.append(fit(X, "diag", True))
    for other in fits[1:]:
        np.testing.assert_array_equal(other.means_, fits[0].means_)
        np.testing.assert_array_equal(other.covariances_, fits[0].covariances_)
        assert other.log_likelihood_ == fits[0].log_likelihood_


def test_slow_worker_does_not_hold_up_the_e_step(monkeypatch):
    """A worker stalled on its first task (as on a core taken by another library's
    spinning BLAS threads) leaves the other tasks to the other worker."""
    import threading
    import time

    X = blobs(6000, 3, 4, seed=2)
    monkeypatch.setattr(g, "CHUNK_ELEMENTS", 2048)
    monkeypatch.setattr(g, "N_WORKERS", 2)
    ran, stalled = [], []
    step = _e_step._e_step_block

    def spy(ctx, first, *args, **kwargs):
        if first == 0 and not stalled:  # the first task of the first E-step
            stalled.append(threading.get_ident())
            time.sleep(0.3)
        ran.append(threading.get_ident())
        return step(ctx, first, *args, **kwargs)

    monkeypatch.setattr(_e_step, "_e_step_block", spy)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        GaussianMixture(4, covariance_type="diag", random_state=0, max_iter=1, tol=0).fit(X)
    tasks = -(-len(X) // (g.chunk_rows(len(X), 4, 3, "diag") * _e_step.CHUNKS_PER_TASK))
    assert tasks == 9 and len(ran) == 2 * tasks  # two E-steps (one M-step)
    assert ran[:tasks].count(stalled[0]) == 1  # the stalled worker ran its first task only


def spy_left_out(monkeypatch):
    """The components whose left-out moments each E-step added, and every E-step's path."""
    mended, paths = [], []
    blocks, left_out = _e_step._e_step_blocks, _e_step._left_out_statistics

    def spy_blocks(ctx, eta, const, prec_chol, moments, compiled):
        paths.append(compiled)
        return blocks(ctx, eta, const, prec_chol, moments, compiled)

    def spy(ctx, components, eta, const):
        mended.append(components.tolist())
        return left_out(ctx, components, eta, const)

    monkeypatch.setattr(_e_step, "_e_step_blocks", spy_blocks)
    monkeypatch.setattr(_e_step, "_left_out_statistics", spy)
    return mended, paths


@pytest.mark.parametrize("two_threads", [False, True])
def test_left_out_moments_are_added(two_threads, monkeypatch):
    """When what the compiled E-step leaves out is not negligible, the left-out moments of
    those components are added (one pass over the rows), not the whole E-step redone; with
    two worker blocks each keeps its rows' normalization for that pass."""
    X = blobs(3000, 2, 4, seed=3)
    if two_threads:
        monkeypatch.setattr(g, "CHUNK_ELEMENTS", 2048)
        monkeypatch.setattr(g, "N_WORKERS", 2)
    monkeypatch.setattr(_e_step, "SKIPPED_THRESHOLD", 0.5)  # leaves out most responsibilities
    monkeypatch.setattr(_e_step, "SPARSE_MOMENTS_MIN_WIDTH", 0)
    mended, paths = spy_left_out(monkeypatch)
    compiled = fit(X, "full", True)
    assert paths == [True] * 16  # 15 E-steps with moments, the last for the likelihood only
    assert len(mended) == 15 and all(mended)
    assert_same_fit(compiled, fit(X, "full", False))


def tiny_component(n=100_000, seed=0):
    """Two overlapping clusters and 20 rows far away, spread so that the rows of the
    clusters have responsibilities of 1e-31 to 1e-24 for the far component (left out)."""
    rng = np.random.default_rng(seed)
    far = rng.normal(size=(20, 2)) * 14.0 + 100.0
    near = rng.normal(size=(n - 20, 2)) + 1.5 * (np.arange(n - 20) % 2)[:, None]
    return np.vstack([near, far])


@pytest.mark.parametrize("ctype", ["full", "diag"])
def test_tiny_component_mends_only_what_it_needs(ctype, monkeypatch):
    """A 20-row component among 1e5 rows: the compiled E-step equals numpy's to 1e-10,
    never runs the numpy E-step, and adds left-out moments only for components that had
    any: the far one (with SKIPPED_RELATIVE at 0, in every E-step; at its value, never)."""
    X = tiny_component()
    monkeypatch.setattr(_e_step, "SPARSE_MOMENTS_MIN_WIDTH", 0)
    mended, paths = spy_left_out(monkeypatch)

    def run(compiled):
        gm = GaussianMixture(3, covariance_type=ctype, random_state=0, max_iter=20, tol=0)
        limit = 0 if compiled else np.inf
        with pytest.MonkeyPatch.context() as mp, warnings.catch_warnings():
            mp.setattr(_e_step, "COMPILED_E_STEP_MIN_ENTRIES", limit)
            warnings.simplefilter("ignore", ConvergenceWarning)
            return gm.fit(X)

    expected = run(False)
    np.testing.assert_allclose(np.sort(expected.weights_)[0] * len(X), 20.0, rtol=1e-6)
    paths.clear()
    assert_same_fit(run(True), expected)
    assert paths == [True] * 21 and mended == []  # negligible left out: nothing added
    monkeypatch.setattr(_e_step, "SKIPPED_RELATIVE", 0.0)
    paths.clear()
    assert_same_fit(run(True), expected)
    assert paths == [True] * 21 and len(mended) == 20
    assert all(components == mended[0] and len(components) == 1 for components in mended)


@pytest.mark.parametrize("ctype", ["full", "diag", "spherical"])
def test_features_into_equals_features(ctype):
    from bayes_gmm import _em_kernel

    X = blobs(50, 5, 2)
    center = X.mean(axis=0)
    expected = g.features(X - center, ctype)
    out = np.empty_like(expected)
    _em_kernel.features_into(X, center, _em_kernel.CTYPE_CODES[ctype], out)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_fits_on_every_thread_of_the_worker_pool_finish(monkeypatch):
    """Fits running on all of the E-step's worker threads (a caller's tasks on that pool)
    finish, as on their own: filling the stored features and the E-step hand their blocks
    out with share_out, which does not wait for a helper the busy pool never starts."""
    import concurrent.futures

    X = blobs(6000, 3, 4, seed=2)
    monkeypatch.setattr(g, "CHUNK_ELEMENTS", 2048)  # many chunks: two worker blocks
    monkeypatch.setattr(g, "N_WORKERS", 2)

    def one_fit():
        return GaussianMixture(4, random_state=0, max_iter=3, tol=0).fit(X)

    pool = g.worker_pool()
    tasks = [pool.submit(one_fit) for _ in range(pool._max_workers)]
    _, pending = concurrent.futures.wait(tasks, timeout=120)
    assert not pending
    alone = one_fit()
    for task in tasks:
        assert_same_fit(task.result(), alone)
