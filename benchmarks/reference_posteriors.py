"""Posterior means and sds of two reference fits, written to JSON.

Run once with the package as it was before the PyMC model became the default (the
hand-written numba log density sampled by nutpie, commit e593901) to make
``reference/kernel_posteriors.json``; ``bench_nuts.py --compare-reference`` fits the
same data with today's default and prints both side by side.

    PYTHONPATH=<old checkout> python benchmarks/reference_posteriors.py OUT.json
"""

import json
import sys
import warnings

import numpy as np

from bayes_gmm import BayesianGaussianMixture
from bayes_gmm.datasets import load_faithful, make_foot_sizes

CASES = {
    "faithful_tied_3": (lambda: load_faithful().to_numpy(), 3, "tied"),
    "foot_sizes_2": (lambda: make_foot_sizes(random_state=0)[0], 2, "full"),
}


def summarize(model):
    post = model.idata_["posterior"]
    out = {}
    for name in ("weights", "means", "covariances"):
        values = post[name].values.reshape(-1, *post[name].shape[2:])
        out[name] = {"mean": values.mean(0).tolist(), "sd": values.std(0).tolist()}
    return out


def fit(case, seed=0, draws=2000):
    data, K, ctype = CASES[case]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return BayesianGaussianMixture(
            K, covariance_type=ctype, draws=draws, tune=1000, chains=4, random_state=seed
        ).fit(data())


if __name__ == "__main__":
    result = {case: summarize(fit(case)) for case in CASES}
    with open(sys.argv[1], "w") as f:
        json.dump(result, f, indent=1)
    print(
        json.dumps(
            {
                c: {k: np.round(v["mean"], 4).tolist() for k, v in r.items()}
                for c, r in result.items()
            }
        )
    )
