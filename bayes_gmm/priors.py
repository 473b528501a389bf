"""Conjugate priors shared by the EM engine (MAP) and the Bayesian model.

The prior is a small, explicit value: :class:`GaussianMixturePrior` stores the
user's choices (``None`` meaning "data-based default"), and :meth:`resolve`
turns it into concrete arrays for one data set, one number of components and
one covariance structure. The EM engine and the PyMC model both read the
resolved values, so the MAP estimate and the posterior answer the same model.

Model (``d`` features, ``K`` components)::

    weights            ~ Dirichlet(alpha * ones(K))
    full:      Sigma_k ~ InvWishart(nu, Lambda)            mu_k | Sigma_k ~ N(m0, Sigma_k / kappa)
    tied:      Sigma   ~ InvWishart(nu, Lambda)            mu_k | Sigma   ~ N(m0, Sigma / kappa)
    diag:    s2_{k,j}  ~ InvGamma(nu / 2, lambda_j / 2)    mu_kj | s2_kj  ~ N(m0_j, s2_kj / kappa)
    spherical:  s2_k   ~ InvGamma(nu / 2, lambda / 2)      mu_k | s2_k    ~ N(m0, s2_k I / kappa)

Defaults follow mclust's ``priorControl`` (Fraley & Raftery 2007, "Bayesian
regularization for normal mixture estimation and model-based clustering"):
``kappa = 0.01``, ``m0`` = data mean, ``nu = d + 2``,
``Lambda`` = sample covariance / ``K ** (2 / d)`` (its diagonal for "diag", the
mean of its diagonal for "spherical"), and ``alpha = 1`` (a flat Dirichlet, so
the weights are not shrunk, as in mclust). One deliberate difference: for its diagonal
models mclust puts the mean of the diagonal on every coordinate; ours keep each column's
own variance (``diagonal_scale="mean"`` gives mclust's).

mclust's six other models with a prior (EII, EEI, VEI, EVI, EEV, VEV) each have mclust's
own update, the mode of a prior of the same family (``Structure.map_prior_terms``: a power
of each covariance's determinant and a scale matrix, besides the means' normal prior), as
the four above are; EII, as mclust, leaves the scale out for K >= 2. Every model with one
component takes the update of VII, VVI or VVV, as mclust's ``mvnXII``/``XXI``/``XXX``. From
the same responsibilities every update equals mclust's (tests/test_structures.py) except
where mclust's ``mstep`` and its EM (``me``) disagree, where ours is the consistent one:
EII and EEV follow ``me``, EEI and EVI ``mstep``, and EEI's means are the prior's mode
where mclust leaves them unshrunk.
"""

from __future__ import annotations

import functools
import numbers
from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammaln

__all__ = ["COVARIANCE_TYPES", "GaussianMixturePrior", "ResolvedPrior"]

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
#: ``GaussianMixturePrior.diagonal_scale``'s values: ours, and mclust's.
DIAGONAL_SCALES = ("per_column", "mean")


def _check_covariance_type(covariance_type):
    if covariance_type not in COVARIANCE_TYPES:
        raise ValueError(
            f"covariance_type must be one of {COVARIANCE_TYPES}, got {covariance_type!r}."
        )


def _check_prior(prior):
    """None (maximum likelihood) or a :class:`GaussianMixturePrior` EM can maximize."""
    if prior is None:
        return None
    if not isinstance(prior, GaussianMixturePrior):
        raise TypeError(
            "prior must be None (maximum likelihood) or a bayes_gmm.GaussianMixturePrior, got "
            f"{type(prior).__name__}."
        )
    if prior.weight_concentration < 1:
        raise ValueError(
            "EM needs prior.weight_concentration >= 1 for the MAP weights to exist, got "
            f"{prior.weight_concentration}. Use 1 (flat) or larger."
        )
    return prior


@dataclass(frozen=True)
class GaussianMixturePrior:
    """Conjugate prior for a Gaussian mixture (Dirichlet x Normal-inverse-Wishart).

    Every field left at ``None`` takes its data-based default when the prior is
    resolved against a data set (see :meth:`resolve`).

    Parameters
    ----------
    weight_concentration : float, default=1.0
        Symmetric Dirichlet concentration ``alpha`` on the mixing weights. The
        EM engine needs ``alpha >= 1`` for the MAP weights to exist; ``1`` is
        flat.
    mean_precision : float, default=0.01
        Shrinkage ``kappa``: the prior on a component mean has the component's
        covariance divided by ``kappa``, i.e. it is worth ``kappa`` observations.
    mean_prior : array-like of shape (n_features,), default=None
        Prior location ``m0`` of the component means. ``None``: the data mean.
    degrees_of_freedom : float, default=None
        ``nu`` of the inverse-Wishart (and twice the shape of the inverse-gamma
        used by "diag" and "spherical"). ``None``: ``n_features + 2``. Must be
        larger than ``n_features - 1``.
    covariance_prior : float or array-like, default=None
        Shape (), (n_features,) or (n_features, n_features).
        Scale ``Lambda`` of the inverse-Wishart. A scalar means ``scalar * I``,
        a vector a diagonal matrix. ``None``: the sample covariance divided by
        ``n_components ** (2 / n_features)``. The diagonal models use its diagonal (see
        ``diagonal_scale``), the spherical ones its mean; EII's MAP update does not use it
        (as mclust's), except with one component.
    diagonal_scale : {"per_column", "mean"}, default="per_column"
        What the diagonal models (EEI, VEI, EVI, VVI / "diag") take from the scale's
        diagonal: each column's own value, or their mean on every coordinate, as mclust's
        ``priorControl`` does (with it, every MAP model's prior is mclust's, so that MAP
        fits and BIC grids reproduce ``Mclust(..., prior = priorControl())``). Per column
        (the default) a small-variance column is not shrunk towards a large one.

    Examples
    --------
    >>> from bayes_gmm import GaussianMixturePrior
    >>> GaussianMixturePrior(mean_precision=0.05).mean_precision
    0.05
    """

    weight_concentration: float = 1.0
    mean_precision: float = 0.01
    mean_prior: object = None
    degrees_of_freedom: float | None = None
    covariance_prior: object = None
    diagonal_scale: str = "per_column"

    def __post_init__(self):
        if self.diagonal_scale not in DIAGONAL_SCALES:
            raise ValueError(
                f"diagonal_scale must be one of {DIAGONAL_SCALES}, got {self.diagonal_scale!r}."
            )
        for name in ("weight_concentration", "mean_precision"):
            value = getattr(self, name)
            if not isinstance(value, numbers.Real) or not np.isfinite(value) or value <= 0:
                raise ValueError(f"{name} must be a positive finite number, got {value!r}.")
        dof = self.degrees_of_freedom
        if dof is not None and (not isinstance(dof, numbers.Real) or not np.isfinite(dof)):
            raise ValueError(f"degrees_of_freedom must be a finite number or None, got {dof!r}.")

    def to_dict(self):
        """Plain-Python representation (lists instead of arrays), for saving."""

        def plain(value):
            if value is None or isinstance(value, numbers.Real):
                return None if value is None else float(value)
            return np.asarray(value, dtype=float).tolist()

        return {
            "weight_concentration": float(self.weight_concentration),
            "mean_precision": float(self.mean_precision),
            "mean_prior": plain(self.mean_prior),
            "degrees_of_freedom": plain(self.degrees_of_freedom),
            "covariance_prior": plain(self.covariance_prior),
            "diagonal_scale": self.diagonal_scale,
        }

    @classmethod
    def from_dict(cls, data):
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def resolve(self, X, n_components, covariance_type="full", sample_weight=None):
        """Concrete hyperparameters for data ``X`` and ``n_components`` components.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Validated, finite data.
        n_components : int
        covariance_type : str
            scikit-learn's four names, or one of mclust's models with a conjugate prior
            (``bayes_gmm.structures``: EII, EEI, VEI, EVI, EEV, VEV besides the four). Those
            six keep the full (d, d) scale; their updates take from it what mclust's do
            (:attr:`ResolvedPrior.map_terms`).
        sample_weight : ndarray of shape (n_samples,), default=None

        Returns
        -------
        ResolvedPrior
            ``covariance_type`` is the storage layout ("full" for mclust's other models).
        """
        from bayes_gmm.structures import check_map_supported

        structure = check_map_supported(covariance_type)
        covariance_type = structure.layout
        X = np.asarray(X, dtype=float)
        n_samples, n_features = X.shape
        w = np.ones(n_samples) if sample_weight is None else np.asarray(sample_weight, float)
        w_sum = w.sum()
        data_mean = w @ X / w_sum

        if self.mean_prior is None:
            mean = data_mean
        else:
            mean = np.asarray(self.mean_prior, dtype=float).reshape(-1)
            if mean.shape != (n_features,):
                raise ValueError(
                    f"mean_prior must have shape ({n_features},) to match the data, "
                    f"got {mean.shape}."
                )

        nu = (
            float(n_features + 2)
            if self.degrees_of_freedom is None
            else float(self.degrees_of_freedom)
        )
        if nu <= n_features - 1:
            raise ValueError(
                f"degrees_of_freedom must be larger than n_features - 1 = {n_features - 1}, "
                f"got {nu}."
            )

        if self.covariance_prior is None:
            centered = X - data_mean
            # mclust's var(): the unbiased covariance. Weights count as repeated rows, so
            # the divisor is sum(w) - 1 (all ones and no weights then agree).
            denom = w_sum - 1.0 if w_sum >= 2.0 else w_sum
            cov = (centered * w[:, None]).T @ centered / denom
            # Constant columns or collinear data make it singular; lift its smallest
            # eigenvalue to a small fraction of the average variance so that the prior,
            # and with it every MAP covariance, stays positive definite.
            mean_var = float(np.mean(np.diag(cov)))
            floor = 1e-6 * (mean_var if mean_var > 0 else 1.0)
            smallest = float(np.linalg.eigvalsh(cov)[0])
            if smallest < floor:
                cov = cov + (floor - smallest) * np.eye(n_features)
            scale = cov / n_components ** (2.0 / n_features)
        else:
            scale = np.asarray(self.covariance_prior, dtype=float)
            if scale.ndim == 0:
                scale = float(scale) * np.eye(n_features)
            elif scale.shape == (n_features,):
                scale = np.diag(scale)
            if scale.shape != (n_features, n_features):
                raise ValueError(
                    "covariance_prior must be a scalar, a vector of length n_features or an "
                    f"(n_features, n_features) matrix, got shape {scale.shape}."
                )
            if not np.allclose(scale, scale.T) or np.any(np.linalg.eigvalsh(scale) <= 0):
                raise ValueError("covariance_prior must be symmetric positive definite.")

        if structure.is_diagonal and self.diagonal_scale == "mean":
            scale = np.mean(np.diag(scale)) * np.eye(n_features)
        scale = structure.storage.prior_scale(scale)

        return ResolvedPrior(
            covariance_type=covariance_type,
            n_components=int(n_components),
            n_features=int(n_features),
            weight_concentration=float(self.weight_concentration),
            mean_precision=float(self.mean_precision),
            mean=mean,
            degrees_of_freedom=nu,
            scale=np.asarray(scale, dtype=float),
            model=structure.name,
        )


@dataclass(frozen=True)
class ResolvedPrior:
    """Hyperparameters of :class:`GaussianMixturePrior` for one data set.

    ``scale`` has shape (d, d) for "full" and "tied", (d,) for "diag" and ()
    for "spherical".
    """

    covariance_type: str
    n_components: int
    n_features: int
    weight_concentration: float
    mean_precision: float
    mean: np.ndarray = field(repr=False)
    degrees_of_freedom: float = 0.0
    scale: np.ndarray = field(default=None, repr=False)
    model: str | None = None

    @functools.cached_property
    def _structure(self):
        from bayes_gmm.structures import get_structure

        return get_structure(self.model or self.covariance_type)

    @functools.cached_property
    def map_terms(self):
        """The models stored in the "full" layout (VVV and mclust's other models): the
        prior's extra counts (K,) and scatter matrices (K, d, d) of their MAP update
        (``Structure.map_prior_terms``; VVV: ``nu + d + 2`` and the scale); None for
        "tied", "diag" and "spherical", whose updates read ``scale`` directly."""
        if not self._structure.storage.has_map_terms:
            return None
        return self._structure.map_prior_terms(
            self.n_components, self.degrees_of_freedom, self.scale
        )

    @functools.cached_property
    def _log_normalizer(self):
        """The parameter-free part of :meth:`log_density` (EM evaluates it every iteration)."""
        K, d = self.n_components, self.n_features
        alpha, kappa, nu = self.weight_concentration, self.mean_precision, self.degrees_of_freedom
        const = gammaln(K * alpha) - K * gammaln(alpha)
        # One normal per mean coordinate, each with variance (covariance / kappa).
        const += K * d * (-0.5 * np.log(2 * np.pi) + 0.5 * np.log(kappa))
        if not self._structure.is_sklearn:
            return float(const)  # mclust's other models: the covariances' prior is unnormalized
        const += self._structure.storage.log_prior_normalizer(self.scale, nu, K, d)
        return float(const)

    def log_density(self, weights, means, covariances):
        """Log prior density of mixture parameters (normalized).

        Parameters
        ----------
        weights : ndarray of shape (K,)
        means : ndarray of shape (K, d)
        covariances : ndarray
            (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical.

        Returns
        -------
        float
        """
        alpha = self.weight_concentration
        log_p = self._log_normalizer
        if alpha != 1.0:
            log_p += (alpha - 1.0) * np.sum(np.log(weights))
        diff = means - self.mean
        log_p = self._structure.storage.add_log_covariance_prior(log_p, self, covariances, diff)
        return float(log_p)
