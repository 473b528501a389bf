"""The covariance structures: mclust's 14 models, one object each.

mclust decomposes each component's covariance as ``Sigma_k = lambda_k D_k A_k D_k'``:
volume ``lambda_k`` (a scalar), orientation ``D_k`` (orthogonal) and shape ``A_k``
(diagonal, determinant 1) (Celeux & Govaert 1995). A model's three letters say whether
each is Equal for all components, Variable, or the Identity: "VEV" has variable volumes,
one shape and variable orientations. scikit-learn's four structures are four of them:
"full" = VVV, "tied" = EEE, "diag" = VVI, "spherical" = VII.

A :class:`Structure` owns what differs between models: its names, its number of free
parameters, its storage ``layout`` (which of scikit-learn's four array shapes, E-steps and
precision factors it uses: the ten models scikit-learn lacks store full (K, d, d)
covariances), its M-step from weighted scatter matrices (maximum likelihood and MAP), and
whether mclust defines a conjugate prior for it and whether the Bayesian model supports it.

Examples
--------
>>> from bayes_gmm.structures import get_structure
>>> s = get_structure("tied")
>>> s.name, s.alias, s.n_parameters(3, 2)
('EEE', 'tied', 11)
>>> get_structure("VEV").closest_posterior_structure().name
'VVV'
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, multigammaln

__all__ = [
    "MCLUST_MODELS",
    "POSTERIOR_STRUCTURES",
    "SKLEARN_NAMES",
    "Structure",
    "get_structure",
    "is_structure",
]

#: mclust's 14 models in mclust's order (its tables' columns).
MCLUST_MODELS = (
    "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE",
    "VEE", "EVE", "VVE", "EEV", "VEV", "EVV", "VVV",
)  # fmt: skip

#: scikit-learn's names and the mclust models they are.
SKLEARN_NAMES = {"full": "VVV", "tied": "EEE", "diag": "VVI", "spherical": "VII"}

#: Models with a conjugate prior in mclust's ``priorControl`` (its Fortran has a MAP
#: M-step, ``me*p``, for exactly these).
_MAP_MODELS = ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "EEV", "VEV", "VVV")

#: Models for which the Bayesian model has (or is to have, issue 9) a proper prior and an
#: unconstrained parameterization.
POSTERIOR_STRUCTURES = ("EII", "VII", "EEI", "VVI", "EEE", "VVV")

_LETTER_ORDER = {"I": 0, "E": 1, "V": 2}

#: mclust's MAP update of each model (its Fortran ``ms*p``/``me*p``, Fraley & Raftery 2007),
#: as the model's maximum-likelihood M-step from the posterior scatter
#: ``B_k = W_k + s_k(K) P + kappa n_k / (kappa + n_k) (xbar_k - m0)(xbar_k - m0)'`` and the
#: counts ``n_k + e_k(K, d, nu)``: the form of the prior scale ``P`` (the scale's trace / d
#: times I, its diagonal, or the whole matrix), the share ``s_k`` of it each component takes
#: and the extra count ``e_k``. EII takes no scale (as mclust) and VEV no extra count; the
#: counts sum to mclust's denominators (EEI, EVI: ``nu + 2 + K + n``, mclust's mstep; EEV:
#: ``nu + d + 2 + n``, mclust's me: its mstep drops the mean prior). VVV's row is its own
#: update (every model stored in the "full" layout runs the same one from these terms);
#: "tied", "diag" and "spherical" have their own closed forms, and VII's and VVI's rows
#: (the same updates) serve the other models with one component.
_MAP_UPDATES = {
    "EII": ("spherical", lambda K: 0.0, lambda K, d, nu: 1.0 + (nu + 2.0) / (d * K)),
    "VII": ("spherical", lambda K: 1.0, lambda K, d, nu: 1.0 + (nu + 2.0) / d),
    "EEI": ("diag", lambda K: 1.0 / K, lambda K, d, nu: 1.0 + (nu + 2.0) / K),
    "VEI": ("diag", lambda K: 1.0, lambda K, d, nu: (nu + 3.0) / d),
    "EVI": ("diag", lambda K: 1.0, lambda K, d, nu: 1.0 + (nu + 2.0) / K),
    "VVI": ("diag", lambda K: 1.0, lambda K, d, nu: nu + 3.0),
    "EEV": ("full", lambda K: 1.0, lambda K, d, nu: (nu + d + 2.0) / K),
    "VEV": ("full", lambda K: 1.0, lambda K, d, nu: 0.0),
    "VVV": ("full", lambda K: 1.0, lambda K, d, nu: nu + d + 2.0),
}


@dataclass(frozen=True)
class Structure:
    """One covariance structure (an mclust model).

    Attributes
    ----------
    name : str
        mclust's code, e.g. "VEV".
    alias : str or None
        scikit-learn's name ("full", "tied", "diag", "spherical") where there is one.
    layout : {"full", "tied", "diag", "spherical"}
        How covariances are stored and evaluated: scikit-learn's shapes for its four
        structures, (K, d, d) "full" matrices for the other ten.
    """

    name: str
    alias: str | None
    layout: str

    @property
    def volume(self):
        """The volume letter, "E" or "V"."""
        return self.name[0]

    @property
    def shape(self):
        """The shape letter, "I", "E" or "V"."""
        return self.name[1]

    @property
    def orientation(self):
        """The orientation letter, "I", "E" or "V"."""
        return self.name[2]

    @property
    def is_diagonal(self):
        """Diagonal covariances with a shape (EEI, VEI, EVI, VVI): not spherical ones."""
        return self.orientation == "I" and self.shape != "I"

    @property
    def has_map(self):
        """Whether mclust defines a conjugate prior (MAP fit) for this model."""
        return self.name in _MAP_MODELS

    @property
    def posterior_supported(self):
        """Whether ``BayesianGaussianMixture`` can sample this structure's posterior."""
        return self.name in POSTERIOR_STRUCTURES

    @property
    def is_sklearn(self):
        """One of scikit-learn's four structures (its own shapes and compiled M-step)."""
        return self.alias is not None

    @property
    def storage(self):
        """The :class:`Layout` object of :attr:`layout`: its shapes and numpy math."""
        return LAYOUTS[self.layout]

    @property
    def shares_covariance(self):
        """Whether one stored covariance serves every component ("tied" layout)."""
        return self.storage.shared

    def display_name(self, one_dimensional=False):
        """mclust's name: the code, or "E" / "V" for one-dimensional data."""
        return self.volume if one_dimensional else self.name

    def n_covariance_parameters(self, n_components, n_features):
        """Free parameters of the K covariances: volumes, shapes and orientations."""
        K, d = int(n_components), int(n_features)
        count = {"E": 1, "V": K}[self.volume]
        count += {"I": 0, "E": d - 1, "V": K * (d - 1)}[self.shape]
        count += {"I": 0, "E": d * (d - 1) // 2, "V": K * d * (d - 1) // 2}[self.orientation]
        return count

    def n_parameters(self, n_components, n_features):
        """Free parameters of the mixture: K - 1 weights, K d means, the covariances."""
        K, d = int(n_components), int(n_features)
        return self.n_covariance_parameters(K, d) + K * d + K - 1

    def nests(self, other):
        """Whether ``other`` is a special case of this model (letter by letter I < E < V)."""
        return all(
            _LETTER_ORDER[a] <= _LETTER_ORDER[b] for a, b in zip(other.name, self.name, strict=True)
        )

    def single_component_structure(self):
        """The model this one is for one component: VII (spherical), VVI (diagonal) or VVV.

        As mclust (its ``mvnXII``, ``mvnXXI``, ``mvnXXX``), a one-component MAP fit uses that
        model's prior and update whatever the model's name.
        """
        if self.orientation != "I":
            return STRUCTURES["VVV"]
        return STRUCTURES["VII" if self.shape == "I" else "VVI"]

    def map_prior_terms(self, n_components, degrees_of_freedom, scale):
        """The prior's part of this model's MAP covariance update, per component.

        The update is the model's maximum-likelihood M-step
        (:meth:`covariances_from_scatter`) from the scatter ``W_k + prior_scatter[k] +
        kappa n_k / (kappa + n_k) (xbar_k - m0)(xbar_k - m0)'`` and the counts
        ``n_k + extra_counts[k]``: the mode of the prior density
        ``prod_k det(Sigma_k)^(-(extra_counts[k] - 1) / 2) exp(-tr(prior_scatter[k]
        inv(Sigma_k)) / 2) N(mu_k | m0, Sigma_k / kappa)`` (the normal brings the last
        ``det^(-1/2)``; improper for some models), which reproduces mclust's per-model
        updates (see ``_MAP_UPDATES``).

        Parameters
        ----------
        n_components : int
        degrees_of_freedom : float
        scale : ndarray of shape (d, d)
            The resolved prior's scale (``GaussianMixturePrior.resolve``).

        Returns
        -------
        extra_counts : ndarray of shape (K,)
        prior_scatter : ndarray of shape (K, d, d)
        """
        check_map_supported(self.name)
        K = int(n_components)
        d = scale.shape[0]
        rule = self.single_component_structure() if K == 1 else self
        form, share, count = _MAP_UPDATES[rule.name]
        if form == "spherical":
            scale = np.trace(scale) / d**2 * np.eye(d)  # its trace is the mean variance
        elif form == "diag":
            scale = np.diag(np.diagonal(scale))
        extra = np.full(K, count(K, d, float(degrees_of_freedom)))
        return extra, np.broadcast_to(share(K) * scale, (K, d, d)).copy()

    def closest_posterior_structure(self):
        """The structure to sample instead: itself if supported, else the smallest
        supported model that contains it (VEI, EVI -> VVI; the rest -> VVV)."""
        if self.posterior_supported:
            return self
        for name in POSTERIOR_STRUCTURES:  # ordered from the most constrained
            candidate = STRUCTURES[name]
            if candidate.nests(self):
                return candidate
        return STRUCTURES["VVV"]

    def covariances_from_full(self, full, weights):
        """This structure's covariances, in its storage layout, from (K, d, d) ones.

        The model's M-step with ``full`` as the components' covariances and ``weights``
        as their shares: "full" keeps them, "tied" averages them by weight, "diag" and
        "spherical" keep their diagonals and the diagonals' means, and mclust's other
        models run :meth:`covariances_from_scatter` from them, so that when ``full`` is a
        nested model's solution the result is at least as good. It turns one structure's
        solution into a start for another.

        Parameters
        ----------
        full : ndarray of shape (K, d, d)
        weights : ndarray of shape (K,)
            Sum to one.

        Returns
        -------
        ndarray of the layout's shape, or None (see :meth:`covariances_from_scatter`).
        """
        if not self.is_sklearn:
            counts = np.maximum(weights, 1e-12)
            return self.covariances_from_scatter(full * counts[:, None, None], counts, full)
        return self.storage.from_full(full, weights)

    def covariances_from_scatter(self, scatter, counts, previous=None):
        """M-step of the ten models beyond scikit-learn's: (K, d, d) covariances.

        Minimizes ``sum_k n_k log det S_k + tr(W_k inv(S_k))`` over the model's
        covariances (maximum likelihood; under a conjugate prior pass the posterior's
        scatter and counts). Iterative models start from ``previous`` (the current
        covariances; default ``scatter / counts``) so that the objective cannot drop.

        Parameters
        ----------
        scatter : ndarray of shape (K, d, d)
        counts : ndarray of shape (K,)
        previous : ndarray of shape (K, d, d), default=None

        Returns
        -------
        ndarray of shape (K, d, d), or None where a scatter matrix is singular in a
        direction the model needs (a collapsed component).
        """
        if self.is_sklearn:
            raise ValueError(f"{self.name} has its own M-step in bayes_gmm._gaussian.")
        from bayes_gmm._structured import CODES, structured_covariances

        scatter = np.ascontiguousarray(scatter, dtype=float)
        counts = np.ascontiguousarray(counts, dtype=float)
        if previous is None:
            previous = scatter / counts[:, None, None]
        previous = np.ascontiguousarray(previous, dtype=float)
        out = np.empty_like(scatter)
        if not structured_covariances(CODES[self.name], scatter, counts, previous, out):
            return None
        return out


STRUCTURES = {
    name: Structure(
        name,
        next((a for a, m in SKLEARN_NAMES.items() if m == name), None),
        next((a for a, m in SKLEARN_NAMES.items() if m == name), "full"),
    )
    for name in MCLUST_MODELS
}
_LOOKUP = {**STRUCTURES, **{alias: STRUCTURES[name] for alias, name in SKLEARN_NAMES.items()}}


_LAYOUT_NAMES = {name: structure.layout for name, structure in _LOOKUP.items()}


def is_structure(name):
    """Whether ``name`` is an mclust code or a scikit-learn covariance type."""
    return isinstance(name, str) and name in _LOOKUP


def get_structure(name):
    """The :class:`Structure` of an mclust code ("VEV") or a scikit-learn name ("full").

    Raises
    ------
    ValueError
        For any other value, listing the valid names.
    """
    # The common case first, with no isinstance checks: the EM and grid code look names
    # up thousands of times per selection grid.
    try:
        return _LOOKUP[name]
    except (KeyError, TypeError):  # TypeError: unhashable
        pass
    if isinstance(name, Structure):
        return name
    hint = ""
    if isinstance(name, str) and name.upper() in _LOOKUP:
        hint = f" (mclust's codes are upper case: {name.upper()!r})"
    raise ValueError(
        f"covariance_type must be one of scikit-learn's {tuple(SKLEARN_NAMES)} or mclust's "
        f"models {MCLUST_MODELS}, got {name!r}{hint}."
    )


def canonical_name(name):
    """scikit-learn's name where there is one ("EEE" -> "tied"), else mclust's code."""
    structure = get_structure(name)
    return structure.alias or structure.name


def layout_of(name):
    """The storage layout ("full", "tied", "diag", "spherical") of a structure's name."""
    try:
        return _LAYOUT_NAMES[name]
    except (KeyError, TypeError):
        return get_structure(name).layout


def check_map_supported(name):
    """Raise unless mclust defines a conjugate prior for ``name`` (MAP estimation)."""
    structure = get_structure(name)
    if not structure.has_map:
        raise ValueError(
            f"No conjugate prior is defined for covariance_type={name!r} (as in mclust's "
            f"priorControl); MAP estimation supports {_MAP_MODELS} and the scikit-learn names "
            f"{tuple(SKLEARN_NAMES)}. Fit it without a prior, or choose one of those."
        )
    return structure


# --------------------------------------------------------------------------- storage layouts
class Layout:
    """One of scikit-learn's four ways to store covariances, and the numpy math that
    depends on it: what ``bayes_gmm._gaussian`` and ``bayes_gmm.priors`` would otherwise
    branch on. Shapes for K components in d dimensions: "full" (K, d, d), "tied" (d, d),
    "diag" (K, d), "spherical" (K,). (The numba kernel, ``_em_kernel``, keeps integer
    codes for them: compiled code cannot dispatch on Python objects.)
    """

    name = None

    def __repr__(self):
        return f"Layout({self.name!r})"

    def feature_width(self, d):
        """Columns of ``_gaussian.features``: ``[x]`` and the layout's second-order terms."""
        raise NotImplementedError

    def second_moments(self, rest, d):
        """``sum_xx`` of ``_gaussian.summarize`` from the moments' columns after the first
        d (the responsibilities' sums of the second-order features)."""
        return rest

    def finish_second_moments(self, sum_xx, d, tied_moment):
        """``sum_xx`` in the shape the M-step reads (``_gaussian.finish_moments``)."""
        return sum_xx

    def scatter(self, sum_xx, nk, xbar):
        """Weighted scatter about the component means ``xbar`` (K, d)."""
        raise NotImplementedError

    def ml_counts(self, nk, d):
        """What maximum likelihood divides the scatter by (:meth:`divide`)."""
        return nk

    def map_posterior(self, scatter, shrink, delta, prior, weight, total_weight):
        """The MAP update's posterior scatter and counts, from the scatter, the means' pull
        ``shrink`` (K,) times ``delta = xbar - m0`` (K, d) and a ``CenteredPrior``."""
        raise NotImplementedError

    def divide(self, scatter, counts):
        """Covariances ``scatter / counts``, the counts broadcast per component."""
        return scatter / counts

    def add_to_diagonal(self, covariances, value):
        """Add ``value`` to every variance, in place."""
        covariances += value

    def to_full(self, covariances, n_components, n_features):
        """(..., K, d, d) matrices from covariances with any leading batch axes."""
        raise NotImplementedError

    def covariance_shape(self, n_components, n_features):
        """The shape of K components' covariances (and precision factors) in d dimensions."""
        raise NotImplementedError

    def component(self, covariances, k):
        """Component ``k``'s covariance (matrix or variances)."""
        return covariances[k]

    def from_full(self, full, weights):
        """scikit-learn's M-step from (K, d, d) covariances ``full`` with shares
        ``weights``: the closest covariances of this layout (``covariances_from_full``)."""
        raise NotImplementedError

    def prior_scale(self, scale):
        """The (d, d) prior scale in this layout's shape (``ResolvedPrior.scale``)."""
        return scale

    def log_prior_normalizer(self, scale, nu, n_components, d):
        """Log normalizing constant of the covariances' conjugate priors."""
        raise NotImplementedError

    def add_log_covariance_prior(self, log_p, prior, covariances, diff):
        """``log_p`` plus the log prior density of the covariances and of the means given
        them, without :meth:`log_prior_normalizer` (``ResolvedPrior.log_density``);
        ``diff`` (K, d) is the means minus the prior mean."""
        raise NotImplementedError

    #: Whether the covariances are stored as matrices ("full", "tied"), not variances.
    stores_matrices = False
    #: Whether one stored covariance serves every component ("tied").
    shared = False

    #: Whether the MAP update reads each model's own prior terms (``ResolvedPrior.map_terms``,
    #: ``Structure.map_prior_terms``) rather than the prior's ``scale`` directly.
    has_map_terms = False

    # The E-step's side: precision factors, features and natural parameters.
    def precision_cholesky(self, covariances):
        """``(prec_chol, covariances, repaired)`` as ``_gaussian.precision_cholesky``."""
        raise NotImplementedError

    def log_det_precision_cholesky(self, prec_chol, d):
        """``log det P`` per component (half the log-determinant of the precision)."""
        raise NotImplementedError

    def precisions_from_cholesky(self, prec_chol):
        """Precision matrices (or vectors) ``P @ P.T`` from their factors."""
        return prec_chol**2

    def covariances_from_precisions(self, precisions):
        """Invert precisions into covariances."""
        return 1.0 / precisions

    def fill_second_order_features(self, Xc, out):
        """Fill the columns of ``out`` (n, :meth:`feature_width`) after the first d with
        the layout's second-order terms of the centered rows ``Xc`` (n, d)."""

    def natural_parameters(self, means, prec_chol):
        """``eta`` (K, :meth:`feature_width`) of ``_gaussian.natural_parameters`` and the
        precisions times the means (K, d)."""
        raise NotImplementedError

    def add_shared_log_prob(self, log_prob, feats, prec_chol):
        """Add to the log-densities (K, n) the term that :meth:`natural_parameters` leaves
        out because it is the same in every component (only "tied" has one)."""

    def covariances_from_cholesky(self, prec_chol):
        """Covariances from the precision factors ``P`` (``P @ P.T = inv(cov)``)."""
        return 1.0 / prec_chol**2

    def smallest_variances(self, covariances):
        """The smallest variance (eigenvalue) of each covariance, over any leading batch
        axes: one per matrix ("full", "tied") or per component ("diag", "spherical")."""
        return covariances.min(axis=-1)

    def second_moments_from_full(self, sum_xx):
        """This layout's ``sum_xx`` (``SufficientStatistics``) from (K, d, d) ones."""
        return sum_xx

    def from_kernel(self, covs):
        """Covariances (or precision factors) in this layout's shapes, with a batch axis,
        from the compiled kernel's (A, K, d, d) layout (``_em_kernel.run_starts``)."""
        return covs


def _matrix_precision_cholesky(covs):
    """Upper-triangular factors ``P`` of the precisions of (K', d, d) covariances,
    ``P P' = inv(C)``, repairing those that are not numerically positive definite: the
    factors, the covariances used and ``(k, added_to_diagonal)`` per repair."""
    repaired = []
    try:
        chol = np.linalg.cholesky(covs)
    except np.linalg.LinAlgError:
        covs = covs.copy()
        chol = np.empty_like(covs)
        for k in range(covs.shape[0]):  # failure path only: not per iteration
            chol[k], added = _robust_cholesky(covs[k])
            if added:
                covs[k].flat[:: covs.shape[-1] + 1] += added
                repaired.append((k, added))
    # numpy's batched inverse: scipy's solve_triangular loops over the batch in Python.
    inverse = np.linalg.inv(chol)
    rows, cols, off = upper_indices(inverse.shape[-1])
    inverse[..., rows[off], cols[off]] = 0.0  # exactly lower-triangular
    return np.swapaxes(inverse, -1, -2), covs, repaired


def _robust_cholesky(cov):
    """Cholesky factor of ``cov``, adding a growing multiple of its scale to the diagonal."""
    d = cov.shape[0]
    scale = max(float(np.mean(np.abs(np.diag(cov)))), np.finfo(float).tiny)
    added = 0.0
    for exponent in range(-12, 3):
        try:
            return np.linalg.cholesky(cov + added * np.eye(d)), added
        except np.linalg.LinAlgError:
            added = scale * 10.0**exponent
    return np.linalg.cholesky(cov + added * np.eye(d)), added


def _add_inverse_wishart_terms(log_p, covariances, counts, scatter, diff, kappa):
    """``log_p - sum_k (counts[k] log det C_k + tr(scatter[k] inv(C_k)) + kappa
    |diff[k]|^2_{inv(C_k)}) / 2`` for (K', d, d) covariances (K' = 1: one for every
    mean)."""
    chol = np.linalg.cholesky(covariances)
    log_det = 2.0 * np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
    # From the factor, C = L L': tr(S inv(C)) = sum(inv(L) * (inv(L) S)) and
    # (mu - m0)' inv(C) (mu - m0) = |inv(L) (mu - m0)|^2. numpy's batched inverse of L:
    # scipy's solve_triangular loops over the batch in Python.
    inv_chol = np.linalg.inv(chol)
    maha = np.sum(np.square(inv_chol @ diff[:, :, None]))
    log_p -= 0.5 * counts @ log_det + 0.5 * np.sum(inv_chol * (inv_chol @ scatter))
    return log_p - 0.5 * kappa * maha


def _add_inverse_gamma_terms(log_p, variances, per_coordinate, scale, nu, diff, kappa):
    """``log_p`` plus the inverse-gamma prior of each variance and the means' normal prior
    given them (``per_coordinate`` (K, d): a spherical variance enters once per
    coordinate)."""
    log_p -= np.sum((0.5 * nu + 1.0) * np.log(variances) + 0.5 * scale / variances)
    log_p -= np.sum(0.5 * np.log(per_coordinate) + 0.5 * kappa * diff**2 / per_coordinate)
    return log_p


class _Full(Layout):
    name = "full"
    stores_matrices = True
    has_map_terms = True

    def feature_width(self, d):
        return d + d * (d + 1) // 2

    def finish_second_moments(self, sum_xx, d, tied_moment):
        return unpack_symmetric(sum_xx, d)  # accumulated as packed upper triangles

    def scatter(self, sum_xx, nk, xbar):
        return sum_xx - nk[:, None, None] * xbar[:, :, None] * xbar[:, None, :]

    def map_posterior(self, scatter, shrink, delta, prior, weight, total_weight):
        # Every model of this layout: its own prior terms (Structure.map_prior_terms).
        prior_counts, prior_scatter = prior.map_terms
        outer = delta[:, :, None] * delta[:, None, :]
        return prior_scatter + scatter + shrink[:, None, None] * outer, prior_counts + weight

    def divide(self, scatter, counts):
        return scatter / counts[:, None, None]

    def add_to_diagonal(self, covariances, value):
        d = covariances.shape[-1]
        covariances[..., np.arange(d), np.arange(d)] += value

    def to_full(self, covariances, n_components, n_features):
        return np.asarray(covariances, dtype=float)

    def covariance_shape(self, n_components, n_features):
        return (n_components, n_features, n_features)

    def from_full(self, full, weights):
        return np.array(full, dtype=float)

    def log_prior_normalizer(self, scale, nu, n_components, d):
        return n_components * _log_wishart_normalizer(scale, nu, d)

    def add_log_covariance_prior(self, log_p, prior, covariances, diff):
        counts, scatter = prior.map_terms
        kappa = prior.mean_precision
        return _add_inverse_wishart_terms(log_p, covariances, counts, scatter, diff, kappa)

    def precision_cholesky(self, covariances):
        return _matrix_precision_cholesky(covariances)

    def log_det_precision_cholesky(self, prec_chol, d):
        return np.sum(np.log(np.diagonal(prec_chol, axis1=1, axis2=2)), axis=1)

    def precisions_from_cholesky(self, prec_chol):
        return prec_chol @ np.swapaxes(prec_chol, 1, 2)

    def covariances_from_precisions(self, precisions):
        return np.linalg.inv(precisions)

    def fill_second_order_features(self, Xc, out):
        # Row a of the upper triangle at a time: no (n, d, d) outer product (for d = 32 that
        # temporary was 16 times the features and took a third of an EM fit's time).
        d = Xc.shape[1]
        col = d
        for a in range(d):
            np.multiply(Xc[:, a, None], Xc[:, a:], out=out[:, col : col + d - a])
            col += d - a

    def natural_parameters(self, means, prec_chol):
        precisions = prec_chol @ np.swapaxes(prec_chol, 1, 2)
        prec_means = np.einsum("kij,kj->ki", precisions, means)
        return np.hstack([prec_means, -0.5 * pack_symmetric(precisions)]), prec_means

    def covariances_from_cholesky(self, prec_chol):
        inv = np.linalg.inv(prec_chol)  # cov = inv(P).T @ inv(P)
        return np.swapaxes(inv, -1, -2) @ inv

    def smallest_variances(self, covariances):
        return np.linalg.eigvalsh(covariances).min(axis=-1)


class _Tied(Layout):
    name = "tied"
    stores_matrices = True
    shared = True
    add_to_diagonal = _Full.add_to_diagonal
    covariances_from_cholesky = _Full.covariances_from_cholesky
    smallest_variances = _Full.smallest_variances

    def feature_width(self, d):
        return d  # its quadratic term is the same for every component: added apart

    def second_moments(self, rest, d):
        # The responsibilities sum to one: the pooled second moment does not depend on
        # them and is computed once (_gaussian.weighted_second_moment).
        return np.zeros((d, d))

    def finish_second_moments(self, sum_xx, d, tied_moment):
        return tied_moment

    def scatter(self, sum_xx, nk, xbar):
        return sum_xx - (xbar * nk[:, None]).T @ xbar

    def ml_counts(self, nk, d):
        return nk.sum()

    def map_posterior(self, scatter, shrink, delta, prior, weight, total_weight):
        posterior = prior.scale + scatter + (delta * shrink[:, None]).T @ delta
        d, K = scatter.shape[-1], len(weight)
        return posterior, prior.nu + d + 1.0 + K + total_weight

    def divide(self, scatter, counts):
        return scatter / counts

    def to_full(self, covariances, n_components, n_features):
        cov = np.asarray(covariances, dtype=float)
        shape = (*cov.shape[:-2], n_components, n_features, n_features)
        return np.broadcast_to(cov[..., None, :, :], shape).copy()

    def covariance_shape(self, n_components, n_features):
        return (n_features, n_features)

    def component(self, covariances, k):
        return covariances

    def from_full(self, full, weights):
        return np.tensordot(weights, full, axes=1)

    def log_prior_normalizer(self, scale, nu, n_components, d):
        return _log_wishart_normalizer(scale, nu, d)

    def add_log_covariance_prior(self, log_p, prior, covariances, diff):
        # One inverse-Wishart; each mean's normal brings another det^(-1/2).
        K, d, nu = prior.n_components, prior.n_features, prior.degrees_of_freedom
        counts = np.array([nu + d + 1.0 + K])
        return _add_inverse_wishart_terms(
            log_p, covariances[None], counts, prior.scale[None], diff, prior.mean_precision
        )

    def precision_cholesky(self, covariances):
        prec_chol, covs, repaired = _matrix_precision_cholesky(covariances[None])
        return prec_chol[0], covs[0], [(-1, added) for _, added in repaired]

    def log_det_precision_cholesky(self, prec_chol, d):
        return np.sum(np.log(np.diag(prec_chol)))

    def precisions_from_cholesky(self, prec_chol):
        return prec_chol @ prec_chol.T

    covariances_from_precisions = _Full.covariances_from_precisions

    def natural_parameters(self, means, prec_chol):
        prec_means = means @ (prec_chol @ prec_chol.T)
        return prec_means, prec_means

    def add_shared_log_prob(self, log_prob, feats, prec_chol):
        Y = feats @ prec_chol  # for "tied" the features are the centered rows
        log_prob -= 0.5 * np.einsum("ij,ij->i", Y, Y)

    def second_moments_from_full(self, sum_xx):
        return sum_xx.sum(axis=0)

    def from_kernel(self, covs):
        return covs[:, 0]


class _Diag(Layout):
    name = "diag"

    def feature_width(self, d):
        return 2 * d

    def scatter(self, sum_xx, nk, xbar):
        return sum_xx - nk[:, None] * np.square(xbar)

    def map_posterior(self, scatter, shrink, delta, prior, weight, total_weight):
        posterior = prior.scale + scatter + shrink[:, None] * np.square(delta)
        return posterior, prior.nu + 3.0 + weight

    def divide(self, scatter, counts):
        return scatter / counts[:, None]

    def to_full(self, covariances, n_components, n_features):
        return np.asarray(covariances, dtype=float)[..., None] * np.eye(n_features)

    def covariance_shape(self, n_components, n_features):
        return (n_components, n_features)

    def from_full(self, full, weights):
        return np.diagonal(full, axis1=1, axis2=2).copy()

    def prior_scale(self, scale):
        return np.diag(scale).copy()

    def log_prior_normalizer(self, scale, nu, n_components, d):
        a, b = 0.5 * nu, 0.5 * scale
        return n_components * np.sum(a * np.log(b) - gammaln(a))

    def add_log_covariance_prior(self, log_p, prior, covariances, diff):
        var = np.asarray(covariances, dtype=float)
        nu, kappa = prior.degrees_of_freedom, prior.mean_precision
        return _add_inverse_gamma_terms(log_p, var, var, prior.scale, nu, diff, kappa)

    def precision_cholesky(self, covariances):
        repaired = []
        var = np.asarray(covariances, dtype=float)
        bad = ~(var > 0)
        if bad.any():
            scale = float(np.max(var[~bad])) if (~bad).any() else 1.0
            added = 1e-10 * max(scale, 1e-300)
            var = np.where(bad, added, var)
            comps = np.unique(np.nonzero(bad)[0])
            repaired.extend((int(k), added) for k in comps)
        return 1.0 / np.sqrt(var), var, repaired

    def log_det_precision_cholesky(self, prec_chol, d):
        return np.sum(np.log(prec_chol), axis=1)

    def fill_second_order_features(self, Xc, out):
        np.square(Xc, out=out[:, Xc.shape[1] :])

    def natural_parameters(self, means, prec_chol):
        prec = prec_chol**2
        prec_means = prec * means
        return np.hstack([prec_means, -0.5 * prec]), prec_means

    def second_moments_from_full(self, sum_xx):
        return np.diagonal(sum_xx, axis1=1, axis2=2).copy()

    def from_kernel(self, covs):
        return np.diagonal(covs, axis1=-2, axis2=-1).copy()


class _Spherical(_Diag):
    name = "spherical"

    def feature_width(self, d):
        return d + 1

    def second_moments(self, rest, d):
        return rest[:, 0]

    def scatter(self, sum_xx, nk, xbar):
        return sum_xx - nk * np.square(xbar).sum(axis=1)

    def ml_counts(self, nk, d):
        return nk * d

    def map_posterior(self, scatter, shrink, delta, prior, weight, total_weight):
        posterior = prior.scale + scatter + shrink * np.square(delta).sum(axis=1)
        d = delta.shape[-1]
        return posterior, prior.nu + 2.0 + d + d * weight

    def divide(self, scatter, counts):
        return scatter / counts

    def to_full(self, covariances, n_components, n_features):
        return np.asarray(covariances, dtype=float)[..., None, None] * np.eye(n_features)

    def covariance_shape(self, n_components, n_features):
        return (n_components,)

    def from_full(self, full, weights):
        return np.diagonal(full, axis1=1, axis2=2).mean(axis=1)

    def prior_scale(self, scale):
        return np.asarray(np.mean(np.diag(scale)))

    def add_log_covariance_prior(self, log_p, prior, covariances, diff):
        var = np.asarray(covariances, dtype=float)
        nu, kappa = prior.degrees_of_freedom, prior.mean_precision
        return _add_inverse_gamma_terms(log_p, var, var[:, None], prior.scale, nu, diff, kappa)

    def log_det_precision_cholesky(self, prec_chol, d):
        return d * np.log(prec_chol)

    def fill_second_order_features(self, Xc, out):
        out[:, Xc.shape[1]] = np.einsum("ij,ij->i", Xc, Xc)

    def natural_parameters(self, means, prec_chol):
        prec = prec_chol**2
        prec_means = prec[:, None] * means
        return np.hstack([prec_means, -0.5 * prec[:, None]]), prec_means

    def smallest_variances(self, covariances):
        return covariances

    def second_moments_from_full(self, sum_xx):
        return np.trace(sum_xx, axis1=1, axis2=2)

    def from_kernel(self, covs):
        return np.diagonal(covs, axis1=-2, axis2=-1)[..., 0].copy()


def _log_wishart_normalizer(scale, nu, d):
    _, log_det_scale = np.linalg.slogdet(scale)
    return 0.5 * nu * log_det_scale - 0.5 * nu * d * np.log(2.0) - multigammaln(0.5 * nu, d)


LAYOUTS = {layout.name: layout for layout in (_Full(), _Tied(), _Diag(), _Spherical())}


def get_layout(name):
    """The :class:`Layout` of a structure's name ("VEV" and "full": the full layout)."""
    try:
        return _LAYOUTS_BY_NAME[name]
    except (KeyError, TypeError):
        return LAYOUTS[layout_of(name)]


_LAYOUTS_BY_NAME = {name: LAYOUTS[layout] for name, layout in _LAYOUT_NAMES.items()}


@functools.cache
def upper_indices(d):
    """Row-major upper-triangle indices of a (d, d) matrix, and which are off-diagonal.

    Cached: ``np.triu_indices`` costs more than a whole EM iteration on small data.
    """
    rows, cols = np.triu_indices(d)
    return rows, cols, rows != cols


def pack_symmetric(matrices):
    """(K, d, d) symmetric -> (K, d (d + 1) / 2), off-diagonal entries doubled."""
    rows, cols, off = upper_indices(matrices.shape[-1])
    packed = matrices[:, rows, cols]
    packed[:, off] *= 2.0
    return packed


def unpack_symmetric(packed, d):
    """(K, d (d + 1) / 2) upper triangles -> (K, d, d) symmetric matrices."""
    rows, cols, _ = upper_indices(d)
    out = np.empty((packed.shape[0], d, d))
    out[:, rows, cols] = packed
    out[:, cols, rows] = packed
    return out
