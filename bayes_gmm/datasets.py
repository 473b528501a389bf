"""Data sets shipped with the package and simulators with known truth.

- :func:`load_faithful`: Old Faithful eruptions (272 x 2), the classic two-cluster data.
- :func:`load_iris`: Fisher's iris (150 x 4) with the species kept as labels.
- :func:`make_foot_sizes`: the 1-D seed example, 700 draws of N(240, 7) and 300 of N(270, 6).
- :func:`make_mixture`: draws from a Gaussian mixture whose parameters are given or drawn,
  returned together with the labels and the true parameters.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import pandas as pd

from bayes_gmm._gaussian import full_covariances
from bayes_gmm._validation import check_int, check_real
from bayes_gmm.priors import _check_covariance_type
from bayes_gmm.structures import get_layout

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


def load_iris(as_frame=True):
    """Fisher's iris flowers: four measurements (cm) of 150 flowers of three species.

    The data come from scikit-learn's copy. The species are returned as labels, so a
    clustering can be compared with them (they are not used by any fit).

    Parameters
    ----------
    as_frame : bool, default=True
        If True, ``X`` is a DataFrame with columns ``sepal_length``, ``sepal_width``,
        ``petal_length``, ``petal_width`` and ``species`` is a categorical Series
        (``setosa``, ``versicolor``, ``virginica``). If False, ``X`` is a float ndarray and
        ``species`` an integer ndarray of codes 0, 1, 2 in that order.

    Returns
    -------
    X : DataFrame or ndarray of shape (150, 4)
    species : Series or ndarray of shape (150,)

    Examples
    --------
    >>> from bayes_gmm.datasets import load_iris
    >>> X, species = load_iris()
    >>> X.shape, species.value_counts().tolist()
    ((150, 4), [50, 50, 50])
    """
    from sklearn.datasets import load_iris as _sk_load_iris

    bunch = _sk_load_iris()
    X = np.asarray(bunch.data, dtype=float)
    codes = np.asarray(bunch.target, dtype=np.int64)
    if not as_frame:
        return X, codes
    columns = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    frame = pd.DataFrame(X, columns=columns)
    species = pd.Series(
        pd.Categorical.from_codes(codes, categories=list(bunch.target_names)), name="species"
    )
    return frame, species


def make_foot_sizes(n_female=700, n_male=300, random_state=None):
    """The seed example: foot lengths (mm) of a mixed class.

    ``n_female`` draws of N(240, 7) and ``n_male`` draws of N(270, 6), shuffled.

    Parameters
    ----------
    n_female, n_male : int, default=700, 300
        Group sizes.
    random_state : int, numpy Generator or None
        Seed for reproducible draws.

    Returns
    -------
    X : ndarray of shape (n_female + n_male, 1)
    labels : ndarray of shape (n_female + n_male,)
        0 for the N(240, 7) group, 1 for the N(270, 6) group.

    Examples
    --------
    >>> from bayes_gmm.datasets import make_foot_sizes
    >>> X, labels = make_foot_sizes(random_state=0)
    >>> X.shape, int(labels.sum())
    ((1000, 1), 300)
    """
    rng = np.random.default_rng(random_state)
    x = np.concatenate([rng.normal(240.0, 7.0, n_female), rng.normal(270.0, 6.0, n_male)])
    labels = np.repeat([0, 1], [n_female, n_male])
    order = rng.permutation(x.size)
    return x[order, None], labels[order]


def _random_rotation(rng, d):
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _draw_scales(rng, n_components, n_features, covariance_type):
    """Covariances with variances between 0.5 and 1.5 (before rotation), in sklearn shapes."""
    K, d = n_components, n_features

    def full_one():
        rot = _random_rotation(rng, d)
        return (rot * rng.uniform(0.5, 1.5, d)) @ rot.T

    if covariance_type == "full":
        return np.stack([full_one() for _ in range(K)])
    if covariance_type == "tied":
        return full_one()
    if covariance_type == "diag":
        return rng.uniform(0.5, 1.5, (K, d))
    return rng.uniform(0.5, 1.5, K)


def _check_covariances(covariances, covariance_type, K, d):
    expected = get_layout(covariance_type).covariance_shape(K, d)
    cov = np.asarray(covariances, dtype=float)
    if cov.shape != expected:
        raise ValueError(
            f"covariances for covariance_type={covariance_type!r} must have shape {expected}, "
            f"got {cov.shape}."
        )
    full = full_covariances(cov, covariance_type, K, d)
    sym = np.allclose(full, np.swapaxes(full, -1, -2))
    if not sym or np.any(np.linalg.eigvalsh((full + np.swapaxes(full, -1, -2)) / 2) <= 0):
        raise ValueError("covariances must be symmetric positive definite.")
    return cov


def make_mixture(
    n_samples=500,
    n_components=3,
    n_features=2,
    *,
    weights=None,
    means=None,
    covariances=None,
    covariance_type="full",
    separation=4.0,
    random_state=None,
):
    """Draw from a Gaussian mixture with known parameters, given or drawn at random.

    Parameters not given are drawn: weights from a Dirichlet(5, ..., 5) (unequal but
    none tiny), covariances with variances in [0.5, 1.5] along random axes (respecting
    ``covariance_type``), and means uniformly in a box, redrawn until every pair of
    means is at least ``separation`` apart (in data units; with unit-order variances
    this is roughly ``separation`` standard deviations).

    Parameters
    ----------
    n_samples : int, default=500
    n_components : int, default=3
        Ignored where ``weights`` or ``means`` are given (their length sets it).
    n_features : int, default=2
        Ignored where ``means`` is given.
    weights : array-like of shape (n_components,), default=None
        Mixing proportions; normalized to sum to one.
    means : array-like of shape (n_components, n_features), default=None
    covariances : array-like, default=None
        In scikit-learn's shape for ``covariance_type``: full (K, d, d), tied (d, d),
        diag (K, d), spherical (K,).
    covariance_type : {"full", "tied", "diag", "spherical"}, default="full"
    separation : float, default=4.0
        Minimum distance between drawn means.
    random_state : int, numpy Generator or None

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
        The draws, shuffled.
    labels : ndarray of shape (n_samples,)
        The component of each draw.
    truth : dict
        ``weights`` (K,), ``means`` (K, d), ``covariances`` (in the shape of
        ``covariance_type``), ``covariance_type``, and ``full_covariances`` (K, d, d).

    Examples
    --------
    >>> from bayes_gmm.datasets import make_mixture
    >>> X, labels, truth = make_mixture(300, 3, 2, random_state=0)
    >>> X.shape, truth["means"].shape
    ((300, 2), (3, 2))
    """
    _check_covariance_type(covariance_type)
    rng = np.random.default_rng(random_state)
    n_samples = check_int(n_samples, "n_samples", 1)
    if means is not None:
        means = np.asarray(means, dtype=float)
        if means.ndim == 1:
            means = means[:, None]
        if means.ndim != 2 or not np.all(np.isfinite(means)):
            raise ValueError(
                f"means must be a finite array of shape (n_components, n_features), "
                f"got shape {means.shape}."
            )
        n_components, n_features = means.shape
    elif weights is not None:
        n_components = len(weights)
    K = check_int(n_components, "n_components", 1)
    d = check_int(n_features, "n_features", 1)

    if weights is None:
        weights = rng.dirichlet(np.full(K, 5.0))
    else:
        weights = np.asarray(weights, dtype=float)
        if weights.shape != (K,) or np.any(weights < 0) or not weights.sum() > 0:
            raise ValueError(
                f"weights must be {K} non-negative numbers with a positive sum, got {weights!r}."
            )
        weights = weights / weights.sum()

    if covariances is None:
        covariances = _draw_scales(rng, K, d, covariance_type)
    else:
        covariances = _check_covariances(covariances, covariance_type, K, d)
    full = full_covariances(covariances, covariance_type, K, d)

    if means is None:
        separation = check_real(separation, "separation", 0)
        # A box whose volume grows with K keeps rejection sampling quick.
        half_width = max(separation, 1.0) * max(1.0, K ** (1.0 / d))
        for _ in range(10_000):
            means = rng.uniform(-half_width, half_width, (K, d))
            dist = np.linalg.norm(means[:, None] - means[None], axis=-1)
            if K == 1 or dist[np.triu_indices(K, 1)].min() >= separation:
                break
            half_width *= 1.001
        else:  # pragma: no cover - the box keeps growing, so this is not reached
            raise RuntimeError("could not place the means; lower `separation`.")

    labels = rng.choice(K, size=n_samples, p=weights)
    chol = np.linalg.cholesky(full)
    z = rng.standard_normal((n_samples, d))
    X = means[labels] + np.einsum("nij,nj->ni", chol[labels], z)
    truth = {
        "weights": weights,
        "means": means,
        "covariances": np.asarray(covariances, dtype=float),
        "covariance_type": covariance_type,
        "full_covariances": full,
    }
    return X, labels, truth
