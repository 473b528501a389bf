"""EM speed: bayes_gmm.GaussianMixture against sklearn.mixture.GaussianMixture.

Both start from the same initial parameters and run the same number of iterations
(tol=0), in one process, on the same data. Each side fits ``--repeat`` times in a row
(ours first, then scikit-learn's, case after case); the times printed are the MEDIANS of
those repeats, for both sides alike, with the range of our wall times (min-max) beside
them. Prints the wall-time ratio, the CPU-time ratio (a steadier measure on a shared
machine) and both final log-likelihoods (they must agree to 1e-8 relative). Single fits
swing on 2 cores: OpenBLAS's threads keep spinning for some 60 ms after each
multi-threaded call (scikit-learn's fit just before ours leaves one busy), and other
jobs take cores. Run with OPENBLAS_NUM_THREADS=1 when other jobs share the cores:
multi-threaded BLAS under contention measures the scheduler, not the code.

Usage: python benchmarks/bench_em.py [--quick] [--iters N] [--repeat R (default 5)]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SkGaussianMixture

from bayes_gmm import GaussianMixture

CASES = [
    # (n_samples, n_features, n_components, covariance_type)
    (1_000_000, 2, 5, "full"),
    (100_000, 32, 16, "full"),
    (100_000, 32, 16, "diag"),
    (100_000, 32, 16, "tied"),
    (100_000, 32, 16, "spherical"),
]


def simulate(n, d, K, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0.0, 4.0, size=(K, d))
    labels = rng.integers(K, size=n)
    mix = rng.normal(size=(K, d, d)) / np.sqrt(d) + np.eye(d)
    return centers[labels] + np.einsum("nij,nj->ni", mix[labels], rng.standard_normal((n, d)))


def initial_parameters(X, K, ctype, seed=0):
    """Means from K random rows, unit-ish covariances: the same start for both libraries."""
    rng = np.random.default_rng(seed)
    d = X.shape[1]
    means = X[rng.choice(X.shape[0], K, replace=False)]
    var = X.var(axis=0).mean()
    prec = {
        "full": np.repeat(np.eye(d)[None] / var, K, axis=0),
        "tied": np.eye(d) / var,
        "diag": np.full((K, d), 1.0 / var),
        "spherical": np.full(K, 1.0 / var),
    }[ctype]
    return {"weights_init": np.full(K, 1.0 / K), "means_init": means, "precisions_init": prec}


def timed_fit(cls, X, K, ctype, iters, init, repeat):
    """Wall and CPU seconds of ``repeat`` fits (arrays), and the last fitted model."""
    wall, cpu, model = [], [], None
    for _ in range(repeat):
        model = cls(K, covariance_type=ctype, max_iter=iters, tol=0.0, **init)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(X)
            wall.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
    return np.array(wall), np.array(cpu), model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10x fewer rows")
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5, help="fits per side; medians shown")
    args = parser.parse_args(argv)

    print(f"medians of {args.repeat} fits per side; 'ours range': our wall times, min-max")
    print(
        f"{'case':30s} {'ours s':>7s} {'ours range':>11s} {'sklearn s':>9s} {'wall':>6s} "
        f"{'cpu':>6s}  log-likelihoods (ours vs sklearn)"
    )
    for n, d, K, ctype in CASES:
        if args.quick:
            n //= 10
        X = simulate(n, d, K)
        init = initial_parameters(X, K, ctype)
        run = (X, K, ctype, args.iters, init, args.repeat)
        walls, cpus, ours = timed_fit(GaussianMixture, *run)
        t_ours, c_ours = np.median(walls), np.median(cpus)
        spread = f"{walls.min():.3f}-{walls.max():.3f}"
        walls, cpus, sk = timed_fit(SkGaussianMixture, *run)
        t_sk, c_sk = np.median(walls), np.median(cpus)
        ll_ours = ours.log_likelihood_
        ll_sk = float(sk.score_samples(X).sum())
        rel = abs(ll_ours - ll_sk) / abs(ll_sk)
        label = f"{n:.0e} x {d}, K={K} {ctype}"
        print(
            f"{label:30s} {t_ours:7.3f} {spread:>11s} {t_sk:9.3f} {t_sk / t_ours:5.1f}x "
            f"{c_sk / c_ours:5.1f}x  "
            f"{ll_ours:.10g} vs {ll_sk:.10g} (rel diff {rel:.1e})"
        )


if __name__ == "__main__":
    main()
