"""EM on Dask against the in-memory fit, scikit-learn and Spark MLlib.

(a) n x 10, K = 8, full (default n = 1e7): our in-memory fit, scikit-learn and our fit
    on a Dask array persisted on a 2-worker ``LocalCluster`` (processes, one thread
    each; blocks of 1e6 rows, 80 MB, generated on the workers), all from the same start
    for the same iterations (tol=0). Prints the times,
    the Dask / in-memory ratio (goal <= 1.5) and the final log-likelihoods (they must
    agree to 1e-8 relative).
(b) big_n x 10 (default 1e8, 8 GB as float64) stored as zarr on disk, fitted on a
    2-worker ``LocalCluster`` whose workers may use 2 GB each, so none can hold the
    data: prints the time, the passes and each worker's peak memory (resident set).
(c) Spark MLlib's ``GaussianMixture`` (pyspark, local mode, 2 cores) on the first
    ``spark_n`` rows of (a), same K, iterations and tol=0, beside ours on the same rows.
    Spark takes no initial parameters, so the starts differ; both log-likelihoods are
    printed. Skipped, with the reason printed, where Java or pyspark is missing.

Usage: python benchmarks/bench_dask.py [--n N] [--big-n N] [--spark-n N] [--iters I]
       [--cases abc] [--zarr PATH]
Run the full sizes once, on a quiet machine; smaller sizes say so in their output.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

from bayes_gmm import GaussianMixture

D, K = 10, 8


def simulate_block(seed, rows):
    """``rows`` x 10 rows of a fixed 8-component mixture (one block, reproducible)."""
    structure = np.random.default_rng(12345)
    centers = structure.normal(0.0, 3.0, size=(K, D))
    mix = structure.normal(size=(K, D, D)) / np.sqrt(D) + np.eye(D)
    rng = np.random.default_rng(seed)
    labels = rng.integers(K, size=rows)
    z = rng.standard_normal((rows, D))
    out = np.empty((rows, D))
    for k in range(K):
        sel = labels == k
        out[sel] = centers[k] + z[sel] @ mix[k].T
    return out


def block_sizes(n, block=1_000_000):
    """Rows of each simulated block: 1e6 (80 MB), or n / 8 for small n (work for 2 workers)."""
    block = min(block, max(1, n // 8))
    return [min(block, n - s) for s in range(0, n, block)]


def simulate(n):
    return np.vstack([simulate_block(i, rows) for i, rows in enumerate(block_sizes(n))])


def simulate_dask(n):
    """The same rows as ``simulate(n)``, each block generated where it is stored (a worker):
    nothing is shipped through the scheduler."""
    import dask
    import dask.array as da

    return da.concatenate(
        [
            da.from_delayed(dask.delayed(simulate_block)(i, rows), (rows, D), float)
            for i, rows in enumerate(block_sizes(n))
        ]
    )


@contextlib.contextmanager
def cluster_client(memory_limit):
    """A 2-worker LocalCluster of processes (one thread each) and its client, closed after."""
    from dask.distributed import Client, LocalCluster

    with (
        LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            memory_limit=memory_limit,
        ) as cluster,
        Client(cluster) as client,
    ):
        yield client


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def start_parameters(X):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gm = GaussianMixture(K, max_iter=5, random_state=0).fit(X[:100_000])
    return dict(weights_init=gm.weights_, means_init=gm.means_, precisions_init=gm.precisions_)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def case_a(n, iters, with_sklearn=True):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture

    print(f"(a) {n:.0e} x {D}, K={K}, full, {iters} iterations from the same start (tol=0)")
    X = simulate(n)
    inits = start_parameters(X)
    kw = dict(tol=0.0, max_iter=iters, reg_covar=1e-6, **inits)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, t_mem, c_mem = timed(lambda: GaussianMixture(K, **kw).fit(X))
        if with_sklearn:
            sk, t_sk, c_sk = timed(lambda: SkGaussianMixture(K, **kw).fit(X))
    ll = ours.log_likelihood_
    print(f"  in-memory (ours): {t_mem:7.1f} s wall, {c_mem:7.1f} s CPU, logL {ll:.10e}")
    if with_sklearn:
        ll_sk = sk.score(X) * n
        print(f"  scikit-learn    : {t_sk:7.1f} s wall, {c_sk:7.1f} s CPU, logL {ll_sk:.10e}")
        print(f"  scikit-learn / ours: {t_sk / t_mem:.1f}x wall, {c_sk / c_mem:.1f}x CPU")
        rel_sk = abs(ll_sk - ll) / abs(ll)
        print(
            f"  iterations: ours {ours.n_iter_}, scikit-learn {sk.n_iter_}; logL relative "
            f"difference {rel_sk:.1e} ({'OK' if rel_sk < 1e-8 else 'ABOVE'} 1e-8)"
        )
    else:
        print("  scikit-learn    : skipped (--no-sklearn)")
    with cluster_client("6GB") as client:
        client.wait_for_workers(2)
        Xd = client.persist(simulate_dask(n))
        from dask.distributed import wait

        wait(Xd)
        before = sum(client.run(_cpu_seconds_worker).values())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            on_dask, t_dask, c_client = timed(lambda: GaussianMixture(K, **kw).fit(Xd))
        c_dask = sum(client.run(_cpu_seconds_worker).values()) - before + c_client
    print(
        f"  Dask, 2 workers : {t_dask:7.1f} s wall, {c_dask:7.1f} s CPU (workers + client), "
        f"logL {on_dask.log_likelihood_:.10e}, {on_dask.n_passes_} passes, "
        f"{on_dask.n_iter_} iterations (ours {ours.n_iter_})"
    )
    rel_dask = abs(on_dask.log_likelihood_ - ll) / abs(ll)
    verdict = "OK" if rel_dask < 1e-8 else "ABOVE"
    print(f"  Dask logL relative difference {rel_dask:.1e} ({verdict} 1e-8)")
    print(
        f"  Dask / in-memory: {t_dask / t_mem:.2f}x wall, {c_dask / c_mem:.2f}x CPU (goal <= 1.5x)"
    )
    return X, inits


def _cpu_seconds_worker():
    import resource as r

    usage = r.getrusage(r.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_rss_worker():
    import resource as r

    return r.getrusage(r.RUSAGE_SELF).ru_maxrss / 1024


def case_b(big_n, iters, path):
    import dask.array as da

    gb = big_n * D * 8 / 1e9
    free = shutil.disk_usage(os.path.dirname(os.path.abspath(path))).free / 1e9
    print(
        f"(b) {big_n:.0e} x {D} as zarr at {path} ({gb:.1f} GB), workers limited to 2 GB; "
        f"{free:.0f} GB free on that disk"
    )
    if free < 1.5 * gb and not os.path.exists(path):
        print(f"  SKIPPED: not enough free disk space for {gb:.1f} GB")
        return
    with cluster_client("2GB") as client:
        try:
            existing = da.from_zarr(path)
            ok = existing.shape == (big_n, D)
        except Exception:
            ok = False
        if not ok:
            shutil.rmtree(path, ignore_errors=True)
            _, t_write, _ = timed(lambda: simulate_dask(big_n).to_zarr(path))
            print(f"  wrote the zarr store in {t_write:.0f} s")
    with cluster_client("2GB") as client:
        Xd = da.from_zarr(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            gm, t_fit, _ = timed(
                lambda: GaussianMixture(K, max_iter=iters, tol=0.0, random_state=0).fit(Xd)
            )
        peaks = client.run(_peak_rss_worker)
    print(
        f"  completed in {t_fit:.0f} s: {gm.n_passes_} passes over the data, {gm.n_iter_} "
        f"iterations, logL {gm.log_likelihood_:.6e}"
    )
    for worker, mb in sorted(peaks.items()):
        print(f"  peak memory (resident) of worker {worker}: {mb:.0f} MB (limit 2048 MB)")


def case_c(X, inits, spark_n, iters):
    print(
        f"(c) Spark MLlib GaussianMixture, local[2], first {spark_n:.0e} rows of (a), K={K}, "
        f"{iters} iterations, tol=0"
    )
    try:
        java = subprocess.run(["java", "-version"], capture_output=True, text=True, check=True)
        java_version = java.stderr.splitlines()[0]
    except (OSError, subprocess.CalledProcessError) as exc:
        print(
            f"  SKIPPED: no Java runtime ({exc}); install one with `apt-get install openjdk-17-jre`"
        )
        return
    try:
        import pyspark
        from pyspark.ml.clustering import GaussianMixture as SparkGaussianMixture
        from pyspark.sql import SparkSession
    except ImportError as exc:
        print(f"  SKIPPED: pyspark is not installed ({exc}); `pip install pyspark`")
        return
    Xs = X[:spark_n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours, t_ours, _ = timed(
            lambda: GaussianMixture(K, tol=0.0, max_iter=iters, **inits).fit(Xs)
        )
    spark = (
        SparkSession.builder.master("local[2]")
        .config("spark.driver.memory", "6g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        import pandas as pd
        from pyspark.ml.feature import VectorAssembler

        columns = [f"x{j}" for j in range(D)]
        with tempfile.TemporaryDirectory() as tmp:  # parquet: no per-row Python on the way in
            pd.DataFrame(Xs, columns=columns).to_parquet(f"{tmp}/x.parquet")
            frame = VectorAssembler(inputCols=columns, outputCol="features").transform(
                spark.read.parquet(f"{tmp}/x.parquet")
            )
            frame = frame.select("features").repartition(2).cache()
            frame.count()
            model, t_spark, _ = timed(
                lambda: SparkGaussianMixture(k=K, maxIter=iters, tol=0.0, seed=0).fit(frame)
            )
            ll_spark = model.summary.logLikelihood
    finally:
        spark.stop()
    print(f"  {java_version}; pyspark {pyspark.__version__}")
    print(f"  ours (in memory): {t_ours:7.1f} s, logL {ours.log_likelihood_:.8e} (our start)")
    print(f"  Spark MLlib     : {t_spark:7.1f} s, logL {ll_spark:.8e} (Spark's own random start)")
    print(f"  Spark / ours time: {t_spark / t_ours:.1f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=float, default=1e7)
    parser.add_argument("--big-n", type=float, default=1e8)
    parser.add_argument("--spark-n", type=float, default=1e6)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--big-iters", type=int, default=3)
    parser.add_argument("--cases", default="abc")
    parser.add_argument("--no-sklearn", action="store_true", help="(a) without scikit-learn")
    parser.add_argument("--zarr", default=os.path.join(tempfile.gettempdir(), "bench_dask.zarr"))
    args = parser.parse_args()
    n, big_n, spark_n = int(args.n), int(args.big_n), int(args.spark_n)
    if (n, big_n) != (10**7, 10**8):
        print(f"NOTE: reduced sizes (n={n:.0e}, big_n={big_n:.0e}); the issue's case is 1e7 / 1e8")
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores")
    X = inits = None
    if "a" in args.cases or "c" in args.cases:
        if "a" in args.cases:
            X, inits = case_a(n, args.iters, not args.no_sklearn)
        else:
            X = simulate(spark_n)  # (c) alone needs only its rows
            inits = start_parameters(X)
    if "b" in args.cases:
        case_b(big_n, args.big_iters, args.zarr)
    if "c" in args.cases:
        case_c(X, inits, min(spark_n, len(X)), args.iters)
    print(f"peak memory of this (client) process: {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
