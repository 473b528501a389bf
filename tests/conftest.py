import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")


def _prior_point(model, seed):
    """One draw of every free variable of a PyMC model from its prior.

    Returns
    -------
    constrained : dict
        The draw keyed by random-variable name.
    unconstrained : dict
        The same draw mapped by the model's transforms to the scale its log density and
        NUTS work on, keyed by value-variable name (what ``model.compile_logp`` takes).
    """
    import pymc as pm

    draw = pm.draw([model[rv.name] for rv in model.free_RVs], random_seed=seed)
    constrained, unconstrained = {}, {}
    for rv, value in zip(model.free_RVs, draw, strict=True):
        value = np.asarray(value)
        constrained[rv.name] = value
        transform = model.rvs_to_transforms.get(rv)
        if transform is not None:
            value = np.asarray(transform.forward(value, *rv.owner.inputs).eval())
        unconstrained[model.rvs_to_values[rv].name] = value
    return constrained, unconstrained


@pytest.fixture
def prior_point():
    """``prior_point(model, seed) -> (constrained, unconstrained)``: a prior draw of the
    model's free variables, on both scales (see ``_prior_point``)."""
    return _prior_point
