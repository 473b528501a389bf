"""bayes_gmm: Gaussian mixture models with honest uncertainty.

Fast EM (maximum likelihood or MAP), model choice by BIC, and an EM-initialized
NUTS posterior over a PyMC model with the labels summed out.

The heavy stack (PyMC, ArviZ) is imported only when a Bayesian name is first
used, so ``import bayes_gmm`` stays fast.
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "GaussianMixture": "bayes_gmm.em",
    "GaussianMixturePrior": "bayes_gmm.priors",
    "select_model": "bayes_gmm.selection",
    "ModelSelection": "bayes_gmm.selection_result",
    "BayesianGaussianMixture": "bayes_gmm.bayesian",
    "datasets": "bayes_gmm.datasets",
    "plots": "bayes_gmm.plots",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        module = import_module(_LAZY[name])
        value = module if _LAZY[name].endswith("." + name) else getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bayes_gmm' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
