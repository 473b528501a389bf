"""Calibration of BayesianGaussianMixture: interval coverage and simulation-based calibration.

For each of ``--sims`` data sets: draw the truth from a fixed, fully specified prior
(weights ~ Dirichlet(alpha), Sigma_k ~ InvWishart(nu, Lambda), mu_k ~ N(m0, Sigma_k /
kappa)), simulate N points, fit with the *same* prior and ``relabel="ordered"`` (the
ordered model is the exchangeable one with labels sorted by the first coordinate of the
means, so sorting the true components the same way makes the comparison exact), and
record

- whether each true parameter lies in the central 50% and 90% posterior intervals
  (expected shares: 0.50 and 0.90);
- its rank among ``L`` thinned posterior draws (Talts et al. 2018): under correct
  calibration the ranks are uniform on 0..L; a chi-square test over 10 bins gives the
  p-value.

Usage: python benchmarks/calibration.py [--sims 50] [--quick] [--n 200] [--K 2] [--d 2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from scipy import stats

from bayes_gmm import BayesianGaussianMixture, GaussianMixturePrior
from bayes_gmm.diagnostics import SamplingWarning


def draw_truth(rng, prior, K, d):
    resolved = prior.resolve(np.zeros((2, d)), K, "full")  # fixed: nothing is data-based
    weights = rng.dirichlet(np.full(K, resolved.weight_concentration))
    covs = stats.invwishart(df=resolved.degrees_of_freedom, scale=resolved.scale).rvs(
        size=K, random_state=rng
    )
    covs = np.asarray(covs).reshape(K, d, d)
    means = np.array(
        [rng.multivariate_normal(resolved.mean, c / resolved.mean_precision) for c in covs]
    )
    order = np.argsort(means[:, 0])
    return weights[order], means[order], covs[order]


def simulate(rng, weights, means, covs, n):
    labels = rng.choice(len(weights), size=n, p=weights)
    chol = np.linalg.cholesky(covs)
    return means[labels] + np.einsum(
        "nij,nj->ni", chol[labels], rng.standard_normal(means[labels].shape)
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sims", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="12 data sets")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--K", type=int, default=2)
    parser.add_argument("--d", type=int, default=2)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--L", type=int, default=99, help="thinned draws per rank")
    args = parser.parse_args(argv)
    sims = 12 if args.quick else args.sims
    K, d = args.K, args.d
    prior = GaussianMixturePrior(
        weight_concentration=3.0,
        mean_precision=0.05,
        mean_prior=np.zeros(d),
        degrees_of_freedom=d + 4.0,
        covariance_prior=np.eye(d) * 3.0,
    )
    names = [f"weights[{k}]" for k in range(K)]
    names += [f"means[{k},{j}]" for k in range(K) for j in range(d)]
    names += [f"var[{k},{j}]" for k in range(K) for j in range(d)]
    inside50, inside90, ranks = [], [], []
    bad_runs, t0 = 0, time.perf_counter()
    rng = np.random.default_rng(20261121)
    for s in range(sims):
        weights, means, covs = draw_truth(rng, prior, K, d)
        X = simulate(rng, weights, means, covs, args.n)
        model = BayesianGaussianMixture(
            K,
            covariance_type="full",
            prior=prior,
            draws=args.draws,
            tune=1000,
            chains=args.chains,
            relabel="ordered",
            random_state=s,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SamplingWarning)
            model.fit(X)
        bad_runs += not model.diagnostics().ok
        w, m, c = model.posterior_parameters(full=True)
        var = np.diagonal(c, axis1=-2, axis2=-1)
        draws = np.concatenate([w, m.reshape(len(w), -1), var.reshape(len(w), -1)], axis=1)
        truth = np.concatenate(
            [weights, means.ravel(), np.diagonal(covs, axis1=1, axis2=2).ravel()]
        )
        lo50, hi50, lo90, hi90 = np.quantile(draws, [0.25, 0.75, 0.05, 0.95], axis=0)
        inside50.append((lo50 <= truth) & (truth <= hi50))
        inside90.append((lo90 <= truth) & (truth <= hi90))
        thin = draws[np.linspace(0, len(draws) - 1, args.L).round().astype(int)]
        ranks.append(np.sum(thin < truth, axis=0))
    elapsed = time.perf_counter() - t0
    inside50, inside90, ranks = map(np.asarray, (inside50, inside90, ranks))

    print(
        f"{sims} data sets of N={args.n}, K={K}, d={d}; truth from the prior; "
        f"{args.chains} chains x {args.draws} draws; {bad_runs} run(s) failed a "
        f"convergence check; {elapsed:.0f} s"
    )
    bins = 10
    print(f"\n{'parameter':<14} {'in 50%':>7} {'in 90%':>7} {'SBC chi2 p':>11}")
    for i, name in enumerate(names):
        counts = np.histogram(ranks[:, i], bins=bins, range=(0, args.L + 1))[0]
        p = stats.chisquare(counts).pvalue
        print(f"{name:<14} {inside50[:, i].mean():7.2f} {inside90[:, i].mean():7.2f} {p:11.3f}")
    se50 = np.sqrt(0.25 / inside50.size)
    se90 = np.sqrt(0.09 / inside90.size)
    print(
        f"{'all':<14} {inside50.mean():7.2f} {inside90.mean():7.2f}"
        f"   (expected 0.50 +- {2 * se50:.2f}, 0.90 +- {2 * se90:.2f}; 2 s.e., "
        "ignoring dependence)"
    )
    for group, sl in (("weights", slice(0, K)), ("means", slice(K, K + K * d))):
        counts = np.histogram(ranks[:, sl].ravel(), bins=bins, range=(0, args.L + 1))[0]
        print(
            f"SBC ranks, {group} pooled: counts per decile {counts.tolist()}, "
            f"chi2 p = {stats.chisquare(counts).pvalue:.3f}"
        )


if __name__ == "__main__":
    main()
