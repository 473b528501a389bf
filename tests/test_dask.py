"""EM on Dask collections: one map-reduce of block statistics per iteration."""

import contextlib
import multiprocessing
import os
import sys

import numpy as np
import pandas as pd
import pytest

da = pytest.importorskip("dask.array")
dd = pytest.importorskip("dask.dataframe")
distributed = pytest.importorskip("dask.distributed")

from bayes_gmm import GaussianMixture, select_model  # noqa: E402

TYPES = ["full", "tied", "diag", "spherical"]


def _simulate(n, d=3, K=3, seed=0):
    rng = np.random.default_rng(seed)
    means = rng.normal(size=(K, d)) * 4
    labels = rng.choice(K, n)
    return means[labels] + rng.normal(size=(n, d)) * rng.uniform(0.5, 1.5, size=(K, 1))[labels]


@pytest.fixture(scope="module")
def client():
    """A 2-worker LocalCluster of processes, closed after the module's tests."""
    before = set(multiprocessing.active_children())
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client
    assert cluster.status.name == "closed"
    assert set(multiprocessing.active_children()) <= before  # no orphaned worker


@pytest.mark.parametrize("ctype", [*TYPES, "VEV", "EII"])
def test_dask_fit_equals_in_memory_fit_from_the_same_start(client, ctype):
    X = _simulate(20_000)
    Xd = da.from_array(X, chunks=(3_000, 3))
    start = GaussianMixture(3, covariance_type=ctype, random_state=0, max_iter=2).fit(X[:2000])
    kw = dict(
        covariance_type=ctype,
        tol=0.0,
        max_iter=8,
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )
    with pytest.warns(Warning):  # not converged with tol=0
        memory = GaussianMixture(3, **kw).fit(X)
    with pytest.warns(Warning):
        dask_fit = GaussianMixture(3, **kw).fit(Xd)
    assert dask_fit.n_iter_ == memory.n_iter_ == 8
    assert dask_fit.n_passes_ == 1 + 9  # the scan, then one E-step per iteration and the last
    np.testing.assert_allclose(dask_fit.log_likelihood_, memory.log_likelihood_, rtol=1e-12)
    np.testing.assert_allclose(dask_fit.history_, memory.history_, rtol=1e-12)
    np.testing.assert_allclose(dask_fit.means_, memory.means_, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dask_fit.covariances_, memory.covariances_, rtol=1e-10, atol=1e-10)
    proba = dask_fit.predict_proba(Xd)
    assert isinstance(proba, da.Array)  # lazy
    np.testing.assert_allclose(proba.compute(), memory.predict_proba(X), atol=1e-10)
    np.testing.assert_array_equal(dask_fit.predict(Xd).compute(), memory.predict(X))
    scores = dask_fit.score_samples(Xd)
    assert isinstance(scores, da.Array)
    np.testing.assert_allclose(scores.compute(), memory.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(dask_fit.bic(Xd), memory.bic(X), rtol=1e-10)
    np.testing.assert_allclose(dask_fit.icl(Xd), memory.icl(X), rtol=1e-10)


def test_dask_fit_from_sample_starts_finds_the_optimum(client):
    X = _simulate(60_000, seed=1)
    Xd = da.from_array(X, chunks=(10_000, 3))
    memory = GaussianMixture(3, random_state=0, n_init=2, tol=1e-9).fit(X)
    dask_fit = GaussianMixture(3, random_state=0, n_init=3, tol=1e-9).fit(Xd)
    assert dask_fit.converged_
    assert dask_fit.n_passes_ >= 1 + dask_fit.n_iter_ + 1
    assert len(dask_fit.init_log_likelihoods_) == 2  # the best N_FINISH starts ran on all data
    np.testing.assert_allclose(dask_fit.means_, memory.means_, atol=1e-3)
    np.testing.assert_allclose(dask_fit.log_likelihood_, memory.log_likelihood_, rtol=1e-7)


def test_dask_dataframe_with_weights_and_names(client):
    X = _simulate(12_000, seed=2)
    w = np.random.default_rng(0).integers(1, 4, len(X)).astype(float)
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(w=w)
    ddf = dd.from_pandas(frame, npartitions=4)
    start = GaussianMixture(3, random_state=0).fit(X)
    kw = dict(
        weights_init=start.weights_, means_init=start.means_, precisions_init=start.precisions_
    )
    memory = GaussianMixture(3, **kw).fit(frame[["a", "b", "c"]], sample_weight=w)
    dask_fit = GaussianMixture(3, **kw).fit(ddf[["a", "b", "c"]], sample_weight=ddf["w"])
    assert list(dask_fit.feature_names_in_) == ["a", "b", "c"]
    np.testing.assert_allclose(dask_fit.means_, memory.means_, rtol=1e-9)
    np.testing.assert_allclose(dask_fit.log_likelihood_, memory.log_likelihood_, rtol=1e-12)
    labels = dask_fit.predict(ddf[["a", "b", "c"]])
    np.testing.assert_array_equal(labels.compute(), memory.predict(frame[["a", "b", "c"]]))


def test_dask_missing_values(client):
    X = _simulate(15_000, seed=3)
    X[np.random.default_rng(1).random(X.shape) < 0.2] = np.nan
    X = X[~np.isnan(X).all(axis=1)]
    Xd = da.from_array(X, chunks=(4_000, 3))
    start = GaussianMixture(3, random_state=0, missing="em").fit(X[:3000])
    kw = dict(
        missing="em",
        weights_init=start.weights_,
        means_init=start.means_,
        precisions_init=start.precisions_,
    )
    memory = GaussianMixture(3, **kw).fit(X)
    dask_fit = GaussianMixture(3, **kw).fit(Xd)
    assert memory.n_iter_ == dask_fit.n_iter_
    np.testing.assert_allclose(dask_fit.log_likelihood_, memory.log_likelihood_, rtol=1e-12)
    np.testing.assert_allclose(dask_fit.predict_proba(Xd).compute(), memory.predict_proba(X))
    with pytest.raises(ValueError, match='missing="em"'):
        GaussianMixture(3).fit(Xd)


def test_select_model_on_dask_data(client):
    X = _simulate(20_000, seed=4)
    Xd = da.from_array(X, chunks=(5_000, 3))
    kw = dict(n_components=range(1, 4), covariance_types=("full", "tied", "diag", "spherical"))
    sel = select_model(Xd, random_state=0, verbose=False, **kw)
    memory = select_model(X, random_state=0, verbose=False, **kw)
    assert sel.best_params == memory.best_params
    assert sel.n_passes > 2
    for (ctype, K), est in sel.estimators.items():
        row = sel.table.set_index(["covariance_type", "n_components"]).loc[(ctype, K)]
        np.testing.assert_allclose(row["bic"], est.bic(X), rtol=1e-10)
        np.testing.assert_allclose(row["icl"], est.icl(X), rtol=1e-10)
    np.testing.assert_allclose(sel.best_score, memory.best_score, rtol=1e-6)


def test_each_pass_reads_every_block_once():
    """Nothing computed twice: the blocks are read exactly n_passes_ times."""
    import dask

    X = _simulate(6_000, seed=5)
    reads = []

    def record(block):
        if len(block):  # not dask's call on an empty block to infer the output type
            reads.append(len(block))
        return block

    Xd = da.from_array(X, chunks=(1_000, 3)).map_blocks(record, dtype=float)
    with dask.config.set(scheduler="synchronous"):
        gm = GaussianMixture(2, random_state=0, max_iter=5, tol=0.0)
        with pytest.warns(Warning):
            gm.fit(Xd)
        assert len(reads) == 6 * gm.n_passes_
        reads.clear()
        gm.bic(Xd)
        assert len(reads) == 6


def test_bad_dask_input_is_refused_in_one_line():
    X = _simulate(2_000, seed=6)
    Xd = da.from_array(X, chunks=(500, 3))
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        GaussianMixture(2).fit(Xd[Xd[:, 0] > 0])
    frame = pd.DataFrame(X, columns=["a", "b", "c"]).assign(s="x")
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) s \("):
        GaussianMixture(2).fit(dd.from_pandas(frame, npartitions=2))
    Y = X.copy()
    Y[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] with every value missing"):
        GaussianMixture(2, missing="em").fit(da.from_array(Y, chunks=(500, 3)))
    with pytest.raises(ValueError, match=r"0 row|empty"):
        GaussianMixture(2).fit(da.zeros((0, 3), chunks=(10, 3)))
    gm = GaussianMixture(2, random_state=0).fit(Xd)
    with pytest.raises(ValueError, match="X has 2 features, but GaussianMixture is expecting 3"):
        gm.predict(Xd[:, :2])
    with pytest.raises(ValueError, match="dtype"):
        GaussianMixture(2).fit(da.from_array(np.array([["a", "b"]] * 4), chunks=2))


def test_degenerate_dask_fit_warns_as_in_memory():
    from bayes_gmm.em import DegenerateFitWarning

    X = _simulate(3_000, seed=7)
    X[:, 2] = 1.0  # a constant column: every covariance is singular
    with pytest.warns(DegenerateFitWarning):
        GaussianMixture(2, random_state=0).fit(da.from_array(X, chunks=(1_000, 3)))


def _minor_faults_of_e_steps(reuse_heap):
    """Minor page faults of three full E-steps of one block, in the calling process."""
    import resource

    from bayes_gmm import _gaussian as g
    from bayes_gmm._blockstats import block_statistics
    from bayes_gmm._dask import _reused_heap

    rng = np.random.default_rng(0)
    X = rng.normal(size=(100_000, 10))
    K = 8
    covs = np.broadcast_to(np.eye(10), (K, 10, 10)).copy()
    prec_chol = g.precision_cholesky(covs, "full")[0]
    params = (np.full(K, 1 / K), rng.normal(size=(K, 10)), prec_chol, covs, "full")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(3):
        with _reused_heap() if reuse_heap else contextlib.nullcontext():
            block_statistics(X, None, np.zeros(10), *params)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_worker_blocks_reuse_the_heap(client):
    """Dask's workers start with MALLOC_TRIM_THRESHOLD_ set, which fixes glibc's mmap
    threshold: without _reused_heap every chunk's temporaries were mapped and faulted in
    afresh (4x the CPU of the in-memory E-step)."""
    cloudpickle = pytest.importorskip("cloudpickle")
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    try:
        env = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
        if not all(env.values()):
            pytest.skip("this Dask does not fix the workers' malloc thresholds")
        worker = next(iter(env))
        plain = client.submit(_minor_faults_of_e_steps, False, workers=worker, pure=False)
        reused = client.submit(_minor_faults_of_e_steps, True, workers=worker, pure=False)
        plain, reused = plain.result(), reused.result()
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    assert reused * 4 < plain, (reused, plain)
