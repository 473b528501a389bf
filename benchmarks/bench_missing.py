"""BayesianGaussianMixture(missing="em") with many missingness patterns: build, compile, sample.

Data: ``make_mixture(n, K, d)`` with each value missing at random with probability
``--fraction`` (no row left empty), full covariances, short chains. For each layout of
the observed density's rows (``bayes_gmm.missing_density.missing_blocks``):

- ``blocks`` (the default): frequent patterns their own branch, the other rows grouped
  by their number of observed coordinates (a bounded graph);
- ``per_pattern``: one branch per pattern (the layout before the grouping), as
  ``min_rows=1`` gives it.

it prints the patterns, the blocks, the PyMC log density's node count, the seconds to
build the model, to make the JAX functions ("pytensor"), the first sample (XLA's compile
and the run) and a rerun of the compiled sampler on a new seed. JAX's disk cache is off,
so every process compiles.

Usage: python benchmarks/bench_missing.py [--d 4 6 8 10] [--n 2000] [--k 2]
       [--fraction 0.15] [--layouts blocks per_pattern] [--draws 100]
``per_pattern`` at d = 8 takes over 10 minutes to compile (d = 10: longer): time it once.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import warnings

import numpy as np


def one(d, n, K, fraction, layout, draws):
    """Time one layout in this process (JAX's disk cache off)."""
    from pytensor.graph.traversal import ancestors, io_toposort

    from bayes_gmm import BayesianGaussianMixture, missing_density
    from bayes_gmm import model as model_module
    from bayes_gmm.datasets import make_mixture

    if layout == "per_pattern":
        missing_density.MIN_PATTERN_ROWS, missing_density.PATTERN_FRACTION = 1, 0.0
    X = make_mixture(n, K, d, separation=4.0, random_state=1)[0]
    rng = np.random.default_rng(0)
    X[rng.random(X.shape) < fraction] = np.nan
    X[np.isnan(X).all(axis=1), 0] = 0.0
    patterns = len(missing_density.missing_patterns(X)[1])
    blocks = len(missing_density.missing_blocks(X)[2])
    t = time.perf_counter()
    logp = model_module.build_model(X, K, "full").logp()
    build = time.perf_counter() - t
    nodes = len(io_toposort([v for v in ancestors([logp]) if v.owner is None], [logp]))
    settings = dict(draws=draws, tune=draws, chains=2, covariance_type="full", missing="em")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains
        first = BayesianGaussianMixture(K, random_state=0, **settings).fit(X).timings_
        rerun = BayesianGaussianMixture(K, random_state=1, **settings).fit(X).timings_
    print(
        f"d={d:2d} n={n} K={K} {layout:11s} patterns={patterns:4d} blocks={blocks:3d} "
        f"nodes={nodes:5d} build={build:6.2f}s pytensor={first['compile']:6.2f}s "
        f"first_sample={first['sample']:7.1f}s rerun_sample={rerun['sample']:6.2f}s",
        flush=True,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--d", type=int, nargs="+", default=[4, 6, 8, 10])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--fraction", type=float, default=0.15)
    parser.add_argument("--layouts", nargs="+", default=["blocks"])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        one(args.d[0], args.n, args.k, args.fraction, args.layouts[0], args.draws)
        return
    env = dict(os.environ, BAYES_GMM_JAX_CACHE="")
    for d in args.d:
        for layout in args.layouts:
            # A fresh process each: no compiled sampler or JAX cache carried over.
            cmd = [sys.executable, __file__, "--one", "--d", str(d), "--n", str(args.n)]
            cmd += ["--k", str(args.k), "--fraction", str(args.fraction)]
            cmd += ["--layouts", layout, "--draws", str(args.draws)]
            subprocess.run(cmd, env=env, check=True)


if __name__ == "__main__":
    main()
