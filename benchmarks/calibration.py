"""Simulation-based calibration (SBC) of BayesianGaussianMixture, as the project tracks it.

For each case (dimension d, number of components K, covariance structure) and each of
``--sims`` simulations: draw the parameters from the model's own prior (fixed
hyperparameters, nothing data-based), simulate N points, fit with the same prior and the
default relabelling (pivot: each draw permuted to match the EM estimate), and record the
rank of every true quantity among L thinned posterior draws (Talts et al. 2018). If the
posterior is right, every rank is uniform on 0..L.

Two kinds of quantity:

- label-specific: weights[k], means[k,j], log variances[k,j], the true components mapped
  to the pivot's labels (Hungarian assignment on the distance between the true means and
  the relabelled posterior means);
- label-invariant, which no relabelling can affect: the sorted weights, the mixture's mean
  and variance per feature, and the log density at three fixed points.

Per quantity, a chi-square test on 10 rank bins and a Kolmogorov-Smirnov test on the
jittered ranks (u = (rank + U) / (L + 1), uniform under calibration). A case passes when
the smallest p-value, Bonferroni-adjusted over its quantities, is above ``ALPHA``. The
positive control fits with a prior whose covariance scale is ``CONTROL_FACTOR`` times the
one the truth was drawn from: SBC must flag it.

Outputs (``--out``, default benchmarks/results/calibration): ``cases/<case>.json`` (every
rank and diagnostics flag of one case, written when the case finishes: a rerun skips the
cases whose file matches its settings, so a crash loses at most the case in progress),
``calibration.csv`` (one row per case and quantity), ``summary.csv`` (one row per case),
``ranks.png`` (rank histograms of the label-invariant quantities) and ``ecdf.png`` (ECDF
minus uniform with a 95% simultaneous band).

The fits of a run share a pool of ``--jobs`` worker processes, so each worker compiles a
case's sampler once and refits the case's data sets without compiling again.

Usage::

    python benchmarks/calibration.py                 # the tracked run: 200 sims per case
    python benchmarks/calibration.py --small         # a few minutes (the slow test runs it)
    python benchmarks/calibration.py --sims 50 --jobs 2
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import optimize, special, stats

ALPHA = 0.01  # per case, after Bonferroni over its quantities
BINS = 10
CONTROL_FACTOR = 16.0
RESULTS = Path(__file__).resolve().parent / "results" / "calibration"
# Every structure the posterior supports (bayes_gmm.model.POSTERIOR_FORMS); the order fixes
# the seeds, so new structures go at the end.
STRUCTURES = ("full", "tied", "diag", "spherical", "EII", "EEI")


@dataclass(frozen=True)
class Case:
    d: int
    K: int
    structure: str
    control: bool = False  # the positive control: a wrong prior scale in the fit

    @property
    def name(self):
        base = f"d={self.d} K={self.K} {self.structure}"
        return base + f" (control: scale x{CONTROL_FACTOR:g})" if self.control else base

    @property
    def slug(self):
        """The case's file name (no spaces)."""
        return f"d{self.d}_K{self.K}_{self.structure}" + ("_control" if self.control else "")


def cases(small=False):
    """Every structure the posterior supports, 1-D and 2-D, K = 2 and 3; and the control.

    In 1-D the six structures are two models: full, diag and spherical give each
    component its own variance with the prior Gamma(nu / 2, rate = lambda / 2) on its
    precision (a 1 x 1 Wishart is that Gamma), tied, EII and EEI one shared variance with
    the same prior. The samplers' variables differ only by a constant shift on the log
    scale (Bartlett's ``precision_chi2`` against ``precisions``), so full and tied cover 1-D.
    """
    out = []
    for d in (1, 2):
        structures = ("full", "tied") if d == 1 else STRUCTURES
        for K in (2, 3):
            out += [Case(d, K, s) for s in structures]
    out.append(Case(2, 2, "full", control=True))
    if small:
        out = [Case(1, 2, "full"), Case(2, 3, "diag"), Case(2, 2, "full", control=True)]
    return out


# --------------------------------------------------------------------------- the prior


def prior_settings(d, factor=1.0):
    """Fixed hyperparameters (GaussianMixturePrior keyword arguments)."""
    return dict(
        weight_concentration=3.0,
        mean_precision=0.1,
        mean_prior=np.zeros(d),
        degrees_of_freedom=d + 4.0,
        covariance_prior=np.eye(d) * factor,
    )


def draw_truth(rng, case):
    """Weights (K,), means (K, d), covariances (K, d, d) drawn from the model's prior."""
    d, K = case.d, case.K
    p = prior_settings(d)
    nu, kappa, lam = p["degrees_of_freedom"], p["mean_precision"], p["covariance_prior"]
    weights = rng.dirichlet(np.full(K, p["weight_concentration"]))
    if case.structure == "full":
        covs = stats.invwishart(df=nu, scale=lam).rvs(size=K, random_state=rng)
        covs = np.asarray(covs).reshape(K, d, d)
    elif case.structure == "tied":
        cov = np.asarray(stats.invwishart(df=nu, scale=lam).rvs(random_state=rng))
        covs = np.broadcast_to(cov.reshape(d, d), (K, d, d)).copy()
    elif case.structure == "diag":
        # s2_kj ~ InvGamma(nu / 2, lambda_j / 2)
        s2 = (np.diag(lam) / 2) / rng.gamma(nu / 2, size=(K, d))
        covs = np.stack([np.diag(row) for row in s2])
    elif case.structure == "spherical":  # s2_k ~ InvGamma(nu / 2, mean(diag(lambda)) / 2)
        s2 = (np.mean(np.diag(lam)) / 2) / rng.gamma(nu / 2, size=K)
        covs = s2[:, None, None] * np.eye(d)
    elif case.structure == "EII":  # one s2 ~ InvGamma(nu / 2, mean(diag(lambda)) / 2)
        s2 = (np.mean(np.diag(lam)) / 2) / rng.gamma(nu / 2)
        covs = np.broadcast_to(s2 * np.eye(d), (K, d, d)).copy()
    elif case.structure == "EEI":  # s2_j ~ InvGamma(nu / 2, lambda_j / 2), shared over k
        s2 = (np.diag(lam) / 2) / rng.gamma(nu / 2, size=d)
        covs = np.broadcast_to(np.diag(s2), (K, d, d)).copy()
    else:
        raise ValueError(f"no prior draw for structure {case.structure!r}")
    means = np.array([rng.multivariate_normal(p["mean_prior"], c / kappa) for c in covs])
    return weights, means, covs


def simulate(rng, weights, means, covs, n):
    labels = rng.choice(len(weights), size=n, p=weights)
    chol = np.linalg.cholesky(covs)
    z = rng.standard_normal((n, means.shape[1]))
    return means[labels] + np.einsum("nij,nj->ni", chol[labels], z)


# --------------------------------------------------------------------------- quantities


def fixed_points(d):
    """Three points where the log density is compared (in the prior's bulk)."""
    return np.array([[0.0] * d, [-1.5] + [0.5] * (d - 1), [1.5] + [-0.5] * (d - 1)])


def log_density(weights, means, covs, points):
    """log p(points) under each parameter set: (S, K), (S, K, d), (S, K, d, d) -> (S, P)."""
    d = means.shape[-1]
    chol = np.linalg.cholesky(covs)  # (S, K, d, d)
    diff = points[None, None, :, :] - means[:, :, None, :]  # (S, K, P, d)
    sol = np.linalg.solve(chol[:, :, None], diff[..., None])[..., 0]
    maha = np.sum(sol**2, axis=-1)
    logdet = 2 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    comp = -0.5 * (maha + logdet[..., None] + d * np.log(2 * np.pi))
    return special.logsumexp(np.log(weights)[..., None] + comp, axis=1)


def quantities(weights, means, covs, points):
    """The label-invariant quantities of parameter sets: name -> (S,) array."""
    d = means.shape[-1]
    out = {}
    for i, w in enumerate(np.sort(weights, axis=1).T):
        out[f"sorted weight {i}"] = w
    mix_mean = np.einsum("sk,skj->sj", weights, means)
    second = np.einsum("sk,skj->sj", weights, np.diagonal(covs, axis1=-2, axis2=-1) + means**2)
    for j in range(d):
        out[f"mixture mean[{j}]"] = mix_mean[:, j]
        out[f"mixture variance[{j}]"] = second[:, j] - mix_mean[:, j] ** 2
    for i, value in enumerate(log_density(weights, means, covs, points).T):
        out[f"log density at point {i}"] = value
    return out


def label_specific(weights, means, covs):
    """weights[k], means[k,j], log variances[k,j]: name -> (S,) array."""
    out = {}
    K, d = means.shape[-2:]
    logvar = np.log(np.diagonal(covs, axis1=-2, axis2=-1))
    for k in range(K):
        out[f"weights[{k}]"] = weights[:, k]
        for j in range(d):
            out[f"means[{k},{j}]"] = means[:, k, j]
            out[f"log variance[{k},{j}]"] = logvar[:, k, j]
    return out


def match_to_pivot(true_means, post_means, scale):
    """Permutation perm with truth component perm[k] <-> posterior component k."""
    diff = (true_means[:, None, :] - post_means[None, :, :]) / scale
    rows, cols = optimize.linear_sum_assignment(np.sum(diff**2, axis=-1))
    perm = np.empty_like(cols)
    perm[cols] = rows
    return perm


# --------------------------------------------------------------------------- one run


def one_simulation(task):
    """Ranks of every quantity for simulation ``sim`` of ``case`` (runs in a worker)."""
    case, sim, n, draws, tune, L, mass_matrix = task
    from bayes_gmm import BayesianGaussianMixture, GaussianMixturePrior
    from bayes_gmm.diagnostics import SamplingWarning

    seed = [case.d, case.K, STRUCTURES.index(case.structure)]
    rng = np.random.default_rng([20261127, *seed, int(case.control), sim])
    weights, means, covs = draw_truth(rng, case)
    X = simulate(rng, weights, means, covs, n)
    factor = CONTROL_FACTOR if case.control else 1.0
    model = BayesianGaussianMixture(
        case.K,
        covariance_type=case.structure,
        prior=GaussianMixturePrior(**prior_settings(case.d, factor)),
        draws=draws,
        tune=tune,
        chains=2,
        random_state=int(rng.integers(2**31)),
        **({} if mass_matrix is None else {"mass_matrix": mass_matrix}),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("ignore", SamplingWarning)
        model.fit(X)
    report = model.diagnostics()
    w, m, c = (np.asarray(a) for a in model.posterior_parameters(full=True))
    S = len(w)
    thin = np.linspace(0, S - 1, L).round().astype(int)
    w, m, c = w[thin], m[thin], c[thin]

    perm = match_to_pivot(means, m.mean(axis=0), X.std(axis=0) + 1e-12)
    truth_specific = label_specific(weights[perm][None], means[perm][None], covs[perm][None])
    post_specific = label_specific(w, m, c)
    points = fixed_points(case.d)
    truth_invariant = quantities(weights[None], means[None], covs[None], points)
    post_invariant = quantities(w, m, c, points)

    ranks = {}
    for kind, truth, post in (
        ("label-specific", truth_specific, post_specific),
        ("label-invariant", truth_invariant, post_invariant),
    ):
        for name, value in truth.items():
            ranks[(kind, name)] = int(np.sum(post[name] < value[0]))
    flags = {
        "rhat_over": bool(report.max_rhat > 1.01),
        "relabelled_over": bool(report.relabelled_share > 0.05),
        "divergent": bool(report.n_divergent > 0),
    }
    return case, sim, ranks, flags


# --------------------------------------------------------------------------- statistics


def rank_tests(ranks, L, rng):
    """(chi-square p, KS p) of ranks in 0..L against the discrete uniform."""
    ranks = np.asarray(ranks)
    counts = np.histogram(ranks, bins=BINS, range=(0, L + 1))[0]
    chi2_p = stats.chisquare(counts).pvalue
    u = (ranks + rng.uniform(size=ranks.size)) / (L + 1)
    ks_p = stats.kstest(u, "uniform").pvalue
    return float(chi2_p), float(ks_p)


def summarize(results, L):
    """Per quantity the rank tests; per case the verdict and how often diagnostics warned."""
    import pandas as pd

    rng = np.random.default_rng(0)
    rows = []
    by_case = {}
    for case, _, ranks, flags in results:
        entry = by_case.setdefault(case, {"ranks": {}, "flags": []})
        entry["flags"].append(flags)
        for key, r in ranks.items():
            entry["ranks"].setdefault(key, []).append(r)
    warned = []
    for case, entry in by_case.items():
        for (kind, name), r in entry["ranks"].items():
            chi2_p, ks_p = rank_tests(r, L, rng)
            rows.append(
                {
                    "case": case.name,
                    "control": case.control,
                    "kind": kind,
                    "quantity": name,
                    "sims": len(r),
                    "chi2_p": chi2_p,
                    "ks_p": ks_p,
                }
            )
        flags = pd.DataFrame(entry["flags"])
        warned.append(
            {
                "case": case.name,
                "share_rhat_over_1.01": flags["rhat_over"].mean(),
                "share_relabelled_over_5pct": flags["relabelled_over"].mean(),
                "share_divergent": flags["divergent"].mean(),
            }
        )
    table = pd.DataFrame(rows)
    summary = case_summary(table).merge(pd.DataFrame(warned), on="case")
    return table, summary, by_case


def case_summary(table):
    """One row per case from the per-quantity table: Bonferroni-adjusted smallest p-values.

    A case is calibrated when, for the label-invariant and for the label-specific
    quantities alike, the smallest p-value times the number of tests of that kind is above
    ``ALPHA``.
    """
    import pandas as pd

    out = []
    for case, rows in table.groupby("case", sort=False):
        entry = {
            "case": case,
            "control": bool(rows["control"].iloc[0]),
            "sims": int(rows["sims"].min()),
            "quantities": len(rows),
        }
        for kind, label in (("label-invariant", "invariant"), ("label-specific", "specific")):
            ps = rows.loc[rows["kind"] == kind, ["chi2_p", "ks_p"]].to_numpy().ravel()
            entry[f"min_p_{label}"] = min(1.0, ps.min() * ps.size) if ps.size else 1.0
        entry["min_p_bonferroni"] = min(entry["min_p_invariant"], entry["min_p_specific"])
        entry["calibrated"] = entry["min_p_bonferroni"] > ALPHA
        out.append(entry)
    return pd.DataFrame(out)


def result_sentence(summary):
    """The docs' one-paragraph verdict, from ``summary.csv`` (tests/test_docs.py checks it)."""
    regular = summary[~summary["control"].astype(bool)]
    control = summary[summary["control"].astype(bool)]
    passed = regular["calibrated"].astype(bool)
    text = ""
    if len(regular):  # a run of the control alone (--only) has no regular case
        inv = regular.loc[regular["min_p_invariant"].idxmin()]
        spec = regular.loc[regular["min_p_specific"].idxmin()]
        text = (
            f"{int(passed.sum())} of {len(regular)} cases are calibrated "
            f"({int(regular['sims'].min())} simulations each). The smallest Bonferroni-"
            f"adjusted p-value of any case is {inv['min_p_invariant']:.2g} ({inv['case']}) "
            f"for the label-invariant quantities and {spec['min_p_specific']:.2g} "
            f"({spec['case']}) for the label-specific ones."
        )
    if not passed.all():
        failed = ", ".join(regular.loc[~passed, "case"])
        text += f" Not calibrated: {failed}."
    for _, row in control.iterrows():
        verdict = "detected" if not bool(row["calibrated"]) else "NOT detected"
        p = row["min_p_bonferroni"]
        shown = "< 1e-16" if p < 1e-16 else f"= {p:.1g}"
        text += f" The positive control is {verdict}: adjusted p {shown}."
    return text.strip()


# --------------------------------------------------------------------------- figures


def figures(by_case, L, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(by_case)
    ncols = 4
    nrows = int(np.ceil(len(names) / ncols))
    for kind_fig in ("ranks", "ecdf"):
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(3.4 * ncols, 2.6 * nrows), layout="constrained", squeeze=False
        )
        for ax, case in zip(axes.flat, names, strict=False):
            ranks = {
                name: np.asarray(r)
                for (kind, name), r in by_case[case]["ranks"].items()
                if kind == "label-invariant"
            }
            n = len(next(iter(ranks.values())))
            if kind_fig == "ranks":
                pooled = np.concatenate(list(ranks.values()))
                counts = np.histogram(pooled, bins=BINS, range=(0, L + 1))[0]
                expected = pooled.size / BINS
                # 99% band of one bin's count under uniformity (binomial).
                lo, hi = stats.binom.ppf([0.005, 0.995], pooled.size, 1 / BINS)
                ax.axhspan(lo, hi, color="0.85", label="99% band per bin")
                ax.bar(np.arange(BINS), counts, color="C0" if not case.control else "C3")
                ax.axhline(expected, color="black", lw=0.8)
                ax.set_xlabel("rank decile (quantities pooled)")
                ax.set_ylabel("count")
            else:
                grid = np.linspace(0, 1, 201)
                band = np.sqrt(np.log(2 / 0.05) / (2 * n))  # DKW: 95% simultaneous
                ax.fill_between(grid, -band, band, color="0.85", label="95% band")
                for r in ranks.values():
                    u = (r + 0.5) / (L + 1)
                    ecdf = np.searchsorted(np.sort(u), grid, side="right") / len(u)
                    ax.plot(grid, ecdf - grid, lw=0.9)
                ax.set_xlabel("fractional rank")
                ax.set_ylabel("ECDF - uniform")
            ax.set_title(case.name, fontsize="small")
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        what = "Rank histograms" if kind_fig == "ranks" else "Rank ECDF minus uniform, per quantity"
        control = " (red: the positive control, must fail)" if kind_fig == "ranks" else ""
        fig.suptitle(
            f"SBC of BayesianGaussianMixture: {what}\nlabel-invariant quantities; "
            f"{n} simulations per case{control}",
            fontsize="medium",
        )
        fig.savefig(out / f"{kind_fig}.png", dpi=90)
        plt.close(fig)


# --------------------------------------------------------------------------- main


def _settings(sims, n, draws, tune, L, mass_matrix=None):
    settings = {"sims": sims, "n": n, "draws": draws, "tune": tune, "L": L}
    if mass_matrix is not None:  # the estimator's default otherwise: old files still match
        settings["mass_matrix"] = mass_matrix
    return settings


def _load_case(path, case, settings):
    """The results of a finished case from its file, or None if absent or made otherwise."""
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if stored.get("case") != case.name or stored.get("settings") != settings:
        return None
    ranks = {tuple(key.split("|", 1)): values for key, values in stored["ranks"].items()}
    flags = stored["flags"]
    return [
        (
            case,
            sim,
            {key: values[i] for key, values in ranks.items()},
            {name: bool(values[i]) for name, values in flags.items()},
        )
        for i, sim in enumerate(stored["sims"])
    ]


def _save_case(path, case, settings, results, seconds, commit):
    """One finished case: every rank and flag, written atomically."""
    results = sorted(results, key=lambda r: r[1])
    keys = list(results[0][2])
    stored = {
        "case": case.name,
        "settings": settings,
        "commit": commit,
        "seconds": round(seconds, 1),
        "sims": [r[1] for r in results],
        "ranks": {"|".join(key): [r[2][key] for r in results] for key in keys},
        "flags": {name: [int(r[3][name]) for r in results] for name in results[0][3]},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(stored, separators=(",", ":")) + "\n")
    os.replace(tmp, path)


def _log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(case_list, sims, n, draws, tune, L, jobs, out=None, progress=True, mass_matrix=None):
    """Every simulation of every case; each finished case is saved to ``out/cases/``.

    A case whose file exists with the same settings is read back, not refitted. Returns
    the results and the seconds spent fitting in this call.
    """
    settings = _settings(sims, n, draws, tune, L, mass_matrix)
    results = []
    todo = []
    for case in case_list:
        stored = (
            None if out is None else _load_case(out / "cases" / f"{case.slug}.json", case, settings)
        )
        if stored is None:
            todo.append(case)
        else:
            results += stored
            if progress:
                _log(f"{case.name}: read back from {out / 'cases' / (case.slug + '.json')}")
    if not todo:
        return results, 0.0
    t0 = time.perf_counter()
    commit = _commit()  # the code the workers import now, whatever changes meanwhile
    pool = None
    if jobs > 1:
        import multiprocessing as mp

        # The workers unpickle one_simulation by this module's name, so they must be able
        # to import it: spawn hands them the parent's sys.path. (Run as a script, the
        # module is __main__ and they get it anyway; loaded from its file by the tests, not.)
        here = str(Path(__file__).resolve().parent)
        if __name__ != "__main__" and here not in sys.path:
            sys.path.append(here)
        pool = mp.get_context("spawn").Pool(jobs)
    try:
        for c, case in enumerate(todo):
            tasks = [(case, s, n, draws, tune, L, mass_matrix) for s in range(sims)]
            stream = (
                pool.imap_unordered(one_simulation, tasks, chunksize=2)
                if pool is not None
                else map(one_simulation, tasks)
            )
            t_case = time.perf_counter()
            done = []
            for res in stream:
                done.append(res)
                if progress and len(done) % 50 == 0:
                    _log(
                        f"{case.name} ({c + 1}/{len(todo)}): {len(done)}/{sims} fits, "
                        f"{time.perf_counter() - t_case:.0f} s"
                    )
            seconds = time.perf_counter() - t_case
            if out is not None:
                _save_case(
                    out / "cases" / f"{case.slug}.json", case, settings, done, seconds, commit
                )
            results += done
            if progress:
                _log(f"{case.name}: done in {seconds:.0f} s ({seconds / sims:.2f} s per fit)")
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return results, time.perf_counter() - t0


def _resummarize(out):
    """summary.csv again from calibration.csv, keeping the diagnostics' warning shares."""
    import pandas as pd

    table = pd.read_csv(out / "calibration.csv")
    if "control" not in table.columns:  # written before the column existed
        table.insert(1, "control", table["case"].str.contains("control"))
    old = pd.read_csv(out / "summary.csv")
    shares = [c for c in old.columns if c.startswith("share_")]
    summary = case_summary(table).merge(old[["case", *shares]], on="case")
    table.to_csv(out / "calibration.csv", index=False, float_format="%.4g")
    summary.to_csv(out / "summary.csv", index=False, float_format="%.4g")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(result_sentence(summary))
    return 0


def _provenance(out, case_list):
    """Which commit each case's fits ran on, and their time, from the case files."""
    by_commit, seconds, sims = {}, 0.0, 0
    for case in case_list:
        try:
            stored = json.loads((out / "cases" / f"{case.slug}.json").read_text())
        except (OSError, ValueError):
            continue
        by_commit.setdefault(stored.get("commit", "unknown"), []).append(case.name)
        seconds += stored.get("seconds", 0.0)
        sims += len(stored["sims"])
    lines = [
        f"code tested: commit {commit} ({len(names)} case(s): {', '.join(names)})"
        for commit, names in by_commit.items()
    ]
    if sims:
        lines.append(
            f"fitting time over the case files: {seconds:.0f} s for {sims} fits "
            f"({seconds / sims:.2f} s per fit, wall, with the run's jobs)"
        )
    return lines


def _version():
    import bayes_gmm

    return bayes_gmm.__version__


def _commit():
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(Path(__file__).resolve().parent), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=200, help="simulations per case")
    parser.add_argument("--small", action="store_true", help="3 cases x 60 sims (minutes)")
    parser.add_argument("--n", type=int, default=50, help="points per simulated data set")
    parser.add_argument("--draws", type=int, default=200, help="draws per chain (2 chains)")
    parser.add_argument("--tune", type=int, default=250)
    parser.add_argument("--L", type=int, default=99, help="thinned draws per rank")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument(
        "--mass-matrix",
        default=None,
        help="BayesianGaussianMixture's mass_matrix (default: the estimator's default)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--only", default=None, help="run the one case of this name")
    parser.add_argument(
        "--resummarize",
        action="store_true",
        help="rebuild summary.csv in --out from its calibration.csv (no fitting)",
    )
    args = parser.parse_args(argv)
    if args.resummarize:
        return _resummarize(args.out)
    sims = 60 if args.small and args.sims == 200 else args.sims
    case_list = cases(small=args.small)
    if args.only is not None:
        case_list = [c for c in case_list if c.name == args.only]
        if not case_list:
            parser.error(f"no case named {args.only!r}; see cases()")
    args.out.mkdir(parents=True, exist_ok=True)
    # One thread per worker's linear algebra: the workers themselves fill the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    results, elapsed = run(
        case_list,
        sims,
        args.n,
        args.draws,
        args.tune,
        args.L,
        args.jobs,
        out=args.out,
        mass_matrix=args.mass_matrix,
    )
    results.sort(key=lambda r: (case_list.index(r[0]), r[1]))
    table, summary, by_case = summarize(results, args.L)
    table.to_csv(args.out / "calibration.csv", index=False, float_format="%.4g")
    summary.to_csv(args.out / "summary.csv", index=False, float_format="%.4g")
    figures(by_case, args.L, args.out)
    import pandas as pd

    regular = summary[~summary["control"]]
    control = summary[summary["control"]]
    ok = bool(regular["calibrated"].all()) and not bool(control["calibrated"].any())
    lines = [
        f"bayes_gmm {_version()}",
        f"SBC: {len(case_list)} cases x {sims} simulations of N={args.n}; 2 chains x "
        f"{args.draws} draws ({args.tune} tune); ranks among L={args.L} thinned draws; "
        + ("" if args.mass_matrix is None else f"mass_matrix={args.mass_matrix!r}; ")
        + f"{elapsed:.0f} s of fitting in this call with {args.jobs} job(s)",
        *_provenance(args.out, case_list),
    ]
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        lines.append(summary.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    lines.append(result_sentence(summary))
    lines.append(
        "verdict: "
        + ("every case calibrated and the positive control detected" if ok else "FAILED")
    )
    text = "\n".join(lines) + "\n"
    print(text, end="")
    (args.out / "run.txt").write_text(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
