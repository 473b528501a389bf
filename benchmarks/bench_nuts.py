"""NUTS on a Gaussian mixture: a plain PyMC model against BayesianGaussianMixture.

The case (issue "The Bayesian pipeline"): 2-D, K = 3, N = 500, means (-4, 0), (0, 4),
(4, 0), unit covariances, equal weights. For each seed, in one process:

- peer: the model a PyMC user writes: ``pm.Mixture`` over ``pm.MvNormal`` components
  with one ``pm.LKJCholeskyCov`` each, default start, ``pm.sample(1000, tune=1000,
  chains=2)`` (nutpie, as PyMC picks it when installed);
- ours: ``BayesianGaussianMixture(3, covariance_type="full", draws=1000, tune=1000,
  chains=2)``: EM start, closed-form gradient, relabelling, diagnostics.
  ``--backend pymc`` samples our PyMC graph instead (compiled by nutpie with numba once
  per process: the "build" and "compile" columns of the first seed show that cost).

A run "converges" when every r_hat <= 1.01 and every bulk and tail ESS >= 400 over the
weights, means and covariance parameters. Prints the share of converged runs, our
wall-time split (EM, build, compile, sample, relabel, diagnostics) and the ratio of the
total wall times. The first seed of each pays the process-cold costs (imports, loading
or compiling numba code); later seeds are "warm". ``--cold-cache`` points numba and
PyTensor at empty cache folders first, as on a fresh CI machine.

Usage: python benchmarks/bench_nuts.py [--seeds 10] [--quick] [--cold-cache] [--no-peer]
       [--backend numpy|pymc]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

MEANS = [[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]]


def simulate(seed, n=500):
    import numpy as np

    rng = np.random.default_rng(seed)
    labels = rng.integers(3, size=n)
    return np.asarray(MEANS)[labels] + rng.standard_normal((n, 2))


def converged(posterior):
    """(ok, max r_hat, min ESS) over every scalar in a posterior Dataset."""
    import arviz as az
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat = az.rhat(posterior)
        bulk = az.ess(posterior, method="bulk")
        tail = az.ess(posterior, method="tail")

    def values(ds):
        out = [np.ravel(ds[v].values) for v in ds.data_vars]
        return np.concatenate(out) if out else np.array([])

    # Constant entries (the upper triangle of a Cholesky factor) have no r_hat.
    sd = values(posterior.std(("chain", "draw")))
    keep = sd > 0
    r, b, t = values(rhat)[keep], values(bulk)[keep], values(tail)[keep]
    max_rhat = float(np.nanmax(r))
    min_ess = float(min(np.nanmin(b), np.nanmin(t)))
    ok = bool(np.all(r <= 1.01) and np.all(b >= 400) and np.all(t >= 400))
    return ok, max_rhat, min_ess


def run_peer(X, seed, draws, tune, chains):
    import pymc as pm

    t0 = time.perf_counter()
    with pm.Model() as model:
        w = pm.Dirichlet("w", a=[1.0, 1.0, 1.0])
        comps = []
        for k in range(3):
            mu = pm.Normal(f"mu_{k}", 0.0, 10.0, shape=2)
            chol, _, _ = pm.LKJCholeskyCov(
                f"chol_{k}", n=2, eta=2.0, sd_dist=pm.Exponential.dist(1.0, shape=2)
            )
            comps.append(pm.MvNormal.dist(mu=mu, chol=chol))
        pm.Mixture("x", w=w, comp_dists=comps, observed=X)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = pm.sample(draws, tune=tune, chains=chains, random_seed=seed, progressbar=False)
    sample = time.perf_counter() - t1
    post = idata["posterior"].to_dataset()
    names = ["w"] + [f"mu_{k}" for k in range(3)] + [f"chol_{k}" for k in range(3)]
    ok, rhat, ess = converged(post[names])
    return {
        "ok": ok,
        "rhat": rhat,
        "ess": ess,
        "build": build,
        "sample": sample,
        "total": build + sample,
    }


def run_ours(X, seed, draws, tune, chains, backend="numpy"):
    from bayes_gmm import BayesianGaussianMixture
    from bayes_gmm.diagnostics import ESS_MIN, RHAT_MAX, SamplingWarning

    t0 = time.perf_counter()
    model = BayesianGaussianMixture(
        3,
        covariance_type="full",
        draws=draws,
        tune=tune,
        chains=chains,
        random_state=seed,
        backend=backend,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        model.fit(X)
    total = time.perf_counter() - t0
    # The fit already computed r_hat and ESS over the relabelled weights, means and
    # covariances (constant entries left out); the same thresholds as converged().
    report = model.diagnostics_
    rhat = report.max_rhat
    ess = min(report.min_ess_bulk, report.min_ess_tail)
    ok = bool(rhat <= RHAT_MAX and ess >= ESS_MIN)
    out = {"ok": ok, "rhat": rhat, "ess": ess, "total": total}
    out.update({k: v for k, v in model.timings_.items() if k != "total"})
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--quick", action="store_true", help="3 seeds")
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--cold-cache", action="store_true")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--backend", choices=("numpy", "pymc"), default="numpy", help="our model's backend"
    )
    args = parser.parse_args(argv)
    if args.cold_cache:
        if "numba" in sys.modules or "pytensor" in sys.modules:
            raise SystemExit("--cold-cache must be set before numba/pytensor are imported")
        root = tempfile.mkdtemp(prefix="bench_nuts_cache_")
        os.environ["NUMBA_CACHE_DIR"] = os.path.join(root, "numba")
        os.environ["PYTENSOR_FLAGS"] = f"base_compiledir={os.path.join(root, 'pytensor')}"
    n_seeds = 3 if args.quick else args.seeds

    print(
        f"case: 2-D, K=3, N=500; {args.chains} chains x ({args.tune} tune + {args.draws} "
        f"draws); seeds 0..{n_seeds - 1}; cpu count {os.cpu_count()}; "
        f"load average {os.getloadavg()[0]:.1f}; cache {'cold' if args.cold_cache else 'as is'}; "
        f"our backend {args.backend}"
    )
    datasets = [simulate(seed) for seed in range(n_seeds)]
    cols = ["em", "build", "compile", "sample", "relabel", "diagnostics"]
    print("\nours (seconds)")
    print(
        f"{'seed':>4} {'ok':>3} {'max_rhat':>8} {'min_ess':>7} "
        + " ".join(f"{c:>11}" for c in cols)
        + f" {'total':>7}"
    )
    ours, peer = [], []
    for seed, X in enumerate(datasets):
        r = run_ours(X, seed, args.draws, args.tune, args.chains, args.backend)
        ours.append(r)
        print(
            f"{seed:>4} {'yes' if r['ok'] else 'no':>3} {r['rhat']:8.4f} {r['ess']:7.0f} "
            + " ".join(f"{r.get(c, 0.0):11.2f}" for c in cols)
            + f" {r['total']:7.2f}",
            flush=True,
        )
    if not args.no_peer:
        print("\npeer: plain PyMC model, default start, pm.sample (seconds)")
        print(
            f"{'seed':>4} {'ok':>3} {'max_rhat':>8} {'min_ess':>7} {'build':>7} "
            f"{'compile+sample':>14} {'total':>7}"
        )
        for seed, X in enumerate(datasets):
            r = run_peer(X, seed, args.draws, args.tune, args.chains)
            peer.append(r)
            print(
                f"{seed:>4} {'yes' if r['ok'] else 'no':>3} {r['rhat']:8.4f} {r['ess']:7.0f} "
                f"{r['build']:7.2f} {r['sample']:14.2f} {r['total']:7.2f}",
                flush=True,
            )

    def share(rows):
        return f"{sum(r['ok'] for r in rows)}/{len(rows)}"

    def mean(rows, key, skip_first=False):
        rows = rows[1:] if skip_first and len(rows) > 1 else rows
        return sum(r[key] for r in rows) / len(rows)

    print("\nsummary")
    print(
        f"  ours: converged {share(ours)}; first run {ours[0]['total']:.1f} s; "
        f"warm runs mean {mean(ours, 'total', True):.1f} s"
    )
    if peer:
        print(
            f"  peer: converged {share(peer)}; first run {peer[0]['total']:.1f} s; "
            f"warm runs mean {mean(peer, 'total', True):.1f} s"
        )
        ratio = mean(peer, "total") / mean(ours, "total")
        ratio_warm = mean(peer, "total", True) / mean(ours, "total", True)
        print(
            f"  wall-time ratio peer/ours: {ratio:.1f}x over all runs, "
            f"{ratio_warm:.1f}x over warm runs"
        )


if __name__ == "__main__":
    main()
