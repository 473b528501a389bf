"""Data sets shipped with the package and simulators with known truth."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

__all__ = ["load_faithful", "load_iris", "make_foot_sizes", "make_mixture"]


def load_faithful(as_frame=True):
    """Old Faithful geyser eruptions (272 x 2: ``eruptions`` in minutes, ``waiting`` in minutes).

    Parameters
    ----------
    as_frame : bool, default=True
        Return a pandas DataFrame; otherwise a float ndarray of shape (272, 2).

    Returns
    -------
    DataFrame or ndarray of shape (272, 2)

    Examples
    --------
    >>> from bayes_gmm.datasets import load_faithful
    >>> load_faithful().shape
    (272, 2)
    """
    with resources.files("bayes_gmm").joinpath("data/faithful.csv").open("r") as fh:
        frame = pd.read_csv(fh)
    frame = frame.astype(float)
    return frame if as_frame else frame.to_numpy()


def make_foot_sizes(n_female=700, n_male=300, random_state=None):
    """The seed example: foot lengths (mm) of a mixed class.

    ``n_female`` draws of N(240, 7) and ``n_male`` draws of N(270, 6), shuffled.

    Returns
    -------
    X : ndarray of shape (n_female + n_male, 1)
    labels : ndarray of shape (n_female + n_male,)
        0 for the N(240, 7) group, 1 for the N(270, 6) group.
    """
    rng = np.random.default_rng(random_state)
    x = np.concatenate([rng.normal(240.0, 7.0, n_female), rng.normal(270.0, 6.0, n_male)])
    labels = np.repeat([0, 1], [n_female, n_male])
    order = rng.permutation(x.size)
    return x[order, None], labels[order]
