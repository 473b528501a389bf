"""NUTS on a Gaussian mixture: BayesianGaussianMixture against plain PyMC, in one run.

Cases (2 chains x (1000 tune + 1000 draws) unless changed):

- A: 2-D, K = 3, N = 500, full; means (-4, 0), (0, 4), (4, 0), unit covariances.
- B: 5-D, K = 4, N = 5000, full; means drawn N(0, 4^2 I), unit covariances.
- C: as B with N = 1e6 (the posterior on a million rows), 2 chains x (200 tune + 800
  draws), one seed, ours only (the peers would take hours): the whole fit's time, its
  convergence and the process's peak memory. ``--gradient`` prints the time of one
  log-density gradient alone.

For each case, in one run:

1. ours, whole fit (EM + build + compile + sample + relabel + diagnostics), three ways:
   "cold" in a fresh process with empty numba / PyTensor / JAX caches, "warm" in a fresh
   process with the caches the cold run left, and "refit": later seeds (new data of the
   same shape) in one process. Convergence: every r_hat <= 1.01 and every bulk and tail
   ESS >= 400 over the weights, means and covariances, and no divergence.
2. peer "plain PyMC": the model a PyMC user writes (``pm.Mixture`` of ``pm.MvNormal`` with
   one ``pm.LKJCholeskyCov`` each, default start, ``pm.sample`` with its default sampler).
3. peer "our model, pm.sample": ``pm.sample(model=est.model_, initvals=est.start_)``,
   PyMC's default sampler on exactly our model (the sampling route alone).

``--compare-reference`` fits Old Faithful (tied, K = 3) and the foot sizes (K = 2) with
today's default and prints posterior means and sds beside those in
``reference/kernel_posteriors.json`` (made by ``reference_posteriors.py`` with the
previous default sampler, a hand-written numba log density under nutpie), with the
difference in units of the posterior sd.

Usage: python benchmarks/bench_nuts.py [--case A|B|C] [--seeds 10] [--no-peer] [--peer-seeds 3]
       [--no-fresh] [--compare-reference] [--gradient]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {"A": (2, 3, 500), "B": (5, 4, 5000), "C": (5, 4, 1_000_000)}


def simulate(case, seed):
    import numpy as np

    d, K, n = CASES[case]
    rng = np.random.default_rng(seed)
    if case == "A":
        means = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])
    else:
        means = np.random.default_rng(1000 + seed).normal(0.0, 4.0, (K, d))
    labels = rng.integers(K, size=n)
    return means[labels] + rng.standard_normal((n, d))


def converged(posterior, divergences=0):
    """(ok, max r_hat, min ESS) over every non-constant scalar of a posterior Dataset."""
    import arviz as az
    import numpy as np

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rhat, bulk = az.rhat(posterior), az.ess(posterior, method="bulk")
        tail = az.ess(posterior, method="tail")

    def values(ds):
        return np.concatenate([np.ravel(ds[v].values) for v in ds.data_vars])

    keep = values(posterior.std(("chain", "draw"))) > 0
    r, b, t = values(rhat)[keep], values(bulk)[keep], values(tail)[keep]
    ok = bool(np.all(r <= 1.01) and np.all(b >= 400) and np.all(t >= 400) and divergences == 0)
    return ok, float(np.nanmax(r)), float(min(np.nanmin(b), np.nanmin(t)))


def run_ours(case, seed, draws, tune, chains):
    import resource

    from bayes_gmm import BayesianGaussianMixture
    from bayes_gmm.diagnostics import SamplingWarning

    X = simulate(case, seed)
    t0, cpu0 = time.perf_counter(), time.process_time()
    model = BayesianGaussianMixture(
        CASES[case][1],
        covariance_type="full",
        draws=draws,
        tune=tune,
        chains=chains,
        random_state=seed,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        model.fit(X)
    total, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    r = model.diagnostics_
    ess = min(r.min_ess_bulk, r.min_ess_tail)
    ok = bool(r.max_rhat <= 1.01 and ess >= 400 and r.n_divergent == 0)
    out = {
        "ok": ok,
        "rhat": r.max_rhat,
        "ess": ess,
        "total": total,
        "cpu": cpu,
        "gradients": int(model.idata_["sample_stats"].attrs["n_gradients"]),
        "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        "model": model,
    }
    out.update({k: v for k, v in model.timings_.items() if k != "total"})
    return out


def run_plain_pymc(case, seed, draws, tune, chains):
    import numpy as np
    import pymc as pm

    X = simulate(case, seed)
    d, K, _ = CASES[case]
    t0 = time.perf_counter()
    with pm.Model() as model:
        w = pm.Dirichlet("w", a=np.ones(K))
        comps, names = [], ["w"]
        for k in range(K):
            mu = pm.Normal(f"mu_{k}", 0.0, 10.0, shape=d)
            chol, _, _ = pm.LKJCholeskyCov(
                f"chol_{k}", n=d, eta=2.0, sd_dist=pm.Exponential.dist(1.0, shape=d)
            )
            comps.append(pm.MvNormal.dist(mu=mu, chol=chol))
            names += [f"mu_{k}", f"chol_{k}"]
        pm.Mixture("x", w=w, comp_dists=comps, observed=X)
    with model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = pm.sample(draws, tune=tune, chains=chains, random_seed=seed, progressbar=False)
    total = time.perf_counter() - t0
    div = int(idata["sample_stats"]["diverging"].sum())
    ok, rhat, ess = converged(idata["posterior"].to_dataset()[names], div)
    return {"ok": ok, "rhat": rhat, "ess": ess, "total": total}


def run_our_model_pm_sample(fitted, seed, draws, tune, chains):
    import pymc as pm

    t0 = time.perf_counter()
    with fitted.model_, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = pm.sample(
            draws,
            tune=tune,
            chains=chains,
            initvals=fitted.start_,
            random_seed=seed,
            progressbar=False,
            compute_convergence_checks=False,
        )
    total = time.perf_counter() - t0
    div = int(idata["sample_stats"]["diverging"].sum())
    post = idata["posterior"].to_dataset()[["weights", "means", "covariances"]]
    ok, rhat, ess = converged(post, div)  # not relabelled: label switching shows here
    return {"ok": ok, "rhat": rhat, "ess": ess, "total": total}


def fresh_process(case, draws, tune, chains, env):
    """One fit of seed 0 in a new Python process; returns its result line."""
    code = (
        "import json, sys, time; t = time.perf_counter(); "
        f"sys.path.insert(0, {str(HERE)!r}); import bench_nuts as b; "
        f"r = b.run_ours({case!r}, 0, {draws}, {tune}, {chains}); r.pop('model'); "
        "r['launch'] = time.perf_counter() - t; print(json.dumps(r))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def gradient_cost(case, repeats=20):
    """Seconds per gradient of the model's log density and the process's peak memory."""
    import resource

    from bayes_gmm import GaussianMixture, GaussianMixturePrior
    from bayes_gmm.model import build_model
    from bayes_gmm.sampling import _data_inputs, _jax_functions, _setup_jax

    X = simulate(case, 0)
    K = CASES[case][1]
    em = GaussianMixture(K, prior=GaussianMixturePrior(), random_state=0).fit(X)
    model = build_model(X, K, "full", em.prior_)
    _setup_jax()
    import jax
    from jax.flatten_util import ravel_pytree

    from bayes_gmm import _mixture_op
    from bayes_gmm._native import mixture_total_target

    # The kernel's build, once per machine, into an empty cache (before any fit traces it).
    os.environ["BAYES_GMM_KERNEL_CACHE"] = tempfile.mkdtemp(prefix="bench_nuts_kernel_")
    t0 = time.perf_counter()
    built = mixture_total_target() is not None
    print(f"compiled kernel build, empty cache: {time.perf_counter() - t0:.1f} s (built {built})")
    point = model.initial_point()
    flat, unravel = ravel_pytree([point[v.name] for v in model.value_vars])
    repeats = max(repeats, 10_000_000 // X.shape[0])
    print(f"case {case}: N = {X.shape[0]}; load average {os.getloadavg()[0]:.1f}")
    # The fused pass through the compiled kernel, then through its JAX form (the fallback),
    # each traced afresh. Gradients run in one compiled loop, as in NUTS, each at the
    # point the previous one moved (so that XLA cannot hoist them out of the loop).
    for label, min_rows in (("compiled kernel", _mixture_op.NATIVE_MIN_ROWS), ("JAX form", None)):
        _mixture_op.NATIVE_MIN_ROWS = min_rows or sys.maxsize
        prepare_fn, logp_fn, _, _ = _jax_functions(model)
        data = jax.jit(prepare_fn)(*[v.get_value() for v in _data_inputs(model)])

        def gradients(f, data, logp_fn=logp_fn):
            def step(i, f):
                grad = jax.grad(lambda f: logp_fn(*unravel(f), *data)[0])(f)
                return f + 1e-12 * grad

            return jax.lax.fori_loop(0, repeats, step, f)

        run = jax.jit(gradients)
        jax.block_until_ready(run(flat, data))
        t0, cpu0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(run(flat, data))
        per = (time.perf_counter() - t0) / repeats
        cpu = (time.process_time() - cpu0) / repeats
        print(
            f"  {label}: one gradient {per * 1e3:.3f} ms (CPU {cpu * 1e3:.3f} ms); 2 chains "
            f"x 1000 steps at ~12 gradients per step, chains on 2 cores: "
            f"~{per * 12 * 1000:.0f} s of sampling"
        )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"  peak memory {peak:.2f} GB")


def compare_reference():
    sys.path.insert(0, str(HERE))
    import numpy as np
    from reference_posteriors import fit, summarize

    reference = json.loads((HERE / "reference" / "kernel_posteriors.json").read_text())
    print("\nsame posterior as the previous default sampler (numba kernel under nutpie)")
    print(f"{'case':<16} {'parameter':<12} {'max |diff| / sd':>16} {'max MC allowance':>17}")
    for case, ref in reference.items():
        new = summarize(fit(case))
        for name in ("weights", "means", "covariances"):
            m0, s0 = np.asarray(ref[name]["mean"]), np.asarray(ref[name]["sd"])
            m1, s1 = np.asarray(new[name]["mean"]), np.asarray(new[name]["sd"])
            keep = s0 > 0
            z = np.abs(m1 - m0)[keep] / s0[keep]
            sd_ratio = np.abs(s1[keep] / s0[keep] - 1)
            # 8000 draws each with an ESS of at least ~1000: MC error of each mean ~0.03 sd.
            print(
                f"{case:<16} {name:<12} {z.max():16.3f} {'0.1':>17}   "
                f"sd ratio within {sd_ratio.max():.1%}"
            )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=tuple(CASES), default="A")
    parser.add_argument("--seeds", type=int, default=None, help="default: A 10, B 3, C 1")
    parser.add_argument("--draws", type=int, default=None, help="default: A, B 1000; C 800")
    parser.add_argument("--tune", type=int, default=None, help="default: A, B 1000; C 200")
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--peer-seeds", type=int, default=None, help="default: all seeds (A), 3 (B)"
    )
    parser.add_argument("--no-fresh", action="store_true", help="skip the cold/warm processes")
    parser.add_argument("--compare-reference", action="store_true")
    parser.add_argument("--gradient", action="store_true", help="time one gradient only")
    args = parser.parse_args(argv)
    if args.compare_reference:
        compare_reference()
        return
    if args.gradient:
        gradient_cost(args.case)
        return
    case = args.case
    n_seeds = args.seeds or {"A": 10, "B": 3, "C": 1}[case]
    d, K, n = CASES[case]
    # Case C (a million rows) is the 2 chains x 1000 steps: 200 warm-up steps
    # (with the Laplace metric warm-up tunes the step size only) + 800 draws each; its
    # peers would take hours and its fresh processes add nothing.
    draws, tune = (800, 200) if case == "C" else (1000, 1000)
    draws = draws if args.draws is None else args.draws
    tune = tune if args.tune is None else args.tune  # --tune 0 is a valid choice
    run = (draws, tune, args.chains)
    if case == "C":
        args.no_peer = args.no_fresh = True
    print(
        f"case {case}: {d}-D, K={K}, N={n}, full; {args.chains} chains x ({run[1]} tune "
        f"+ {run[0]} draws); cpu count {os.cpu_count()}; load average "
        f"{os.getloadavg()[0]:.1f}"
    )

    if not args.no_fresh:
        root = tempfile.mkdtemp(prefix="bench_nuts_cache_")
        env = dict(
            os.environ,
            NUMBA_CACHE_DIR=os.path.join(root, "numba"),
            PYTENSOR_FLAGS=f"base_compiledir={os.path.join(root, 'pytensor')}",
            BAYES_GMM_JAX_CACHE=os.path.join(root, "jax"),
            BAYES_GMM_KERNEL_CACHE=os.path.join(root, "kernels"),
        )
        print("\nours, one fit in a fresh process (launch = imports + whole fit, seconds)")
        for label in ("cold", "warm"):
            r = fresh_process(case, *run, env)
            print(
                f"  {label}: launch {r['launch']:.1f}, fit {r['total']:.1f} (em {r['em']:.2f}, "
                f"build {r['build']:.2f}, compile {r['compile']:.2f}, sample {r['sample']:.2f})"
                f", CPU {r['cpu']:.1f}; r_hat {r['rhat']:.4f}, ESS {r['ess']:.0f}, ok {r['ok']}",
                flush=True,
            )

    cols = ["em", "build", "compile", "sample", "relabel", "diagnostics", "output"]
    print("\nours in this process: seed 0 first, then refits on new data of the same shape")
    print(
        f"{'seed':>4} {'ok':>3} {'max_rhat':>8} {'min_ess':>7} "
        + " ".join(f"{c:>11}" for c in cols)
        + f" {'total':>7} {'cpu':>7} {'gradients':>9} {'peak_GB':>7}"
    )
    ours = []
    for seed in range(n_seeds):
        r = run_ours(case, seed, *run)
        ours.append(r)
        print(
            f"{seed:>4} {'yes' if r['ok'] else 'no':>3} {r['rhat']:8.4f} {r['ess']:7.0f} "
            + " ".join(f"{r.get(c, 0.0):11.2f}" for c in cols)
            + f" {r['total']:7.2f} {r['cpu']:7.2f} {r['gradients']:9d} {r['peak_gb']:7.2f}",
            flush=True,
        )
    refits = ours[1:] or ours
    print(
        f"  converged {sum(r['ok'] for r in ours)}/{len(ours)}; refit mean "
        f"{sum(r['total'] for r in refits) / len(refits):.2f} s, max "
        f"{max(r['total'] for r in refits):.2f} s"
    )

    if args.no_peer:
        return
    for label, runner, arg in (
        ("peer: plain PyMC model (LKJ priors), default start, pm.sample", run_plain_pymc, None),
        (
            "peer: our model_, pm.sample's default sampler from the EM start",
            run_our_model_pm_sample,
            "model",
        ),
    ):
        print(f"\n{label} (seconds)")
        rows = []
        n_peer = args.peer_seeds or (3 if case == "B" else n_seeds)
        for seed in range(min(n_seeds, n_peer)):
            first = ours[seed]["model"] if arg else case
            r = runner(first, seed, *run)
            rows.append(r)
            print(
                f"{seed:>4} {'yes' if r['ok'] else 'no':>3} {r['rhat']:8.4f} {r['ess']:7.0f} "
                f"{r['total']:7.2f}",
                flush=True,
            )
        mean_peer = sum(r["total"] for r in rows) / len(rows)
        mean_ours = sum(r["total"] for r in ours[: len(rows)]) / len(rows)
        print(
            f"  converged {sum(r['ok'] for r in rows)}/{len(rows)}; mean {mean_peer:.1f} s; "
            f"ratio peer / ours {mean_peer / mean_ours:.1f}x"
        )


if __name__ == "__main__":
    main()
