"""The PyMC model of a Gaussian mixture with the component labels summed out.

Stage 1 of the Bayesian pipeline (model -> sampling -> relabel -> diagnostics ->
estimator). This module says what the posterior *is*; nothing here samples.

The model is exactly the conjugate prior of :mod:`bayes_gmm.priors` (the prior whose
mode the EM engine finds for MAP), written with PyMC's own distributions, and one
observed variable: the mixture density of each row with the labels summed out. For
``K`` components and ``d`` features, with hyperparameters ``alpha, m0, kappa, nu,
Lambda`` from :meth:`GaussianMixturePrior.resolve`::

    weights        ~ Dirichlet(alpha * ones(K))
    full:  P_k     ~ Wishart(nu, Lambda^-1)      (Sigma_k = P_k^-1 ~ InvWishart(nu, Lambda))
    tied:  P       ~ Wishart(nu, Lambda^-1)      (one precision shared by all components)
    diag:  tau_kj  ~ Gamma(nu / 2, rate = lambda_j / 2)
    spherical: tau_k ~ Gamma(nu / 2, rate = lambda / 2)
    EII:   tau     ~ Gamma(nu / 2, rate = mean(lambda) / 2)   (one precision for all)
    EEI:   tau_j   ~ Gamma(nu / 2, rate = lambda_j / 2)        (one diagonal for all)
    means_k | P_k  ~ MvNormal(m0, (kappa P_k)^-1)
    X_n            ~ sum_k weights_k MvNormal(means_k, P_k^-1)       (observed)

The observed variable's log density is :mod:`bayes_gmm.mixture_density`'s
(:func:`~bayes_gmm.mixture_density.mixture_log_density`); with missing values (NaN in
``X``) each row's density is that of its observed coordinates, the missing ones
integrated out (:mod:`bayes_gmm.missing_density`,
:func:`~bayes_gmm.missing_density.observed_mixture_log_density`). Both modules come
before this one (mixture_density -> missing_density -> model) and import nothing of it.

A Wishart precision is written by its Bartlett decomposition, so its random variables
are plain PyMC distributions: ``P = (L A)(L A)^T`` with ``L`` the Cholesky factor of
``Lambda^-1``, ``A`` lower triangular, ``A_ii^2 ~ ChiSquared(nu - i)`` (variable
``precision_chi2``) and ``A_ij ~ Normal(0, 1)`` below the diagonal
(``precision_offdiag``). ``L A`` is then the lower Cholesky factor of the precision, so
the likelihood needs no matrix factorization. Two variables are ``pm.CustomDist`` instances with
a ``random`` method: the means of full and tied, a normal in precision form (see
``_precision_normal``), and the observed mixture ``X``.

Each covariance structure is one :class:`PosteriorForm` (:data:`POSTERIOR_FORMS`): its
random variables, its precision factor, the EM estimate written in its variables (the
chains' start), and the scale of its start jitter. :func:`build_model` assembles the
shared parts (weights, means, observed mixture).

Data and every data-dependent hyperparameter are ``pm.Data``, so one compiled sampler
serves every data set of the same shape (:mod:`bayes_gmm.sampling`).
"""

from __future__ import annotations

from functools import partial

import numpy as np

from bayes_gmm import _missing
from bayes_gmm.missing_density import (
    missing_blocks,
    observed_mixture_log_density,
    observed_mixture_random,
)
from bayes_gmm.mixture_density import LOG_2PI, mixture_log_density, mixture_random
from bayes_gmm.priors import GaussianMixturePrior, ResolvedPrior

__all__ = [
    "POSTERIOR_FORMS",
    "PosteriorForm",
    "build_model",
]

# Names shared with BayesianGaussianMixture.idata_ and the relabelling.
COMPONENT, FEATURE, FEATURE_, OBS = "component", "feature", "feature_", "obs"
_DATA_DIMS = {
    "X_data": (OBS, FEATURE),
    "sample_weight": (OBS,),
    "pattern_order": (OBS,),
    "pattern_columns": (OBS, "position"),
    "prior_mean": (FEATURE,),
}


# ---------------------------------------------------------------------------
# One form per covariance structure
# ---------------------------------------------------------------------------


class PosteriorForm:
    """How one covariance structure enters the PyMC model.

    Subclasses add the structure's random variables and say how the EM estimate is
    written in them. ``covariance_type`` is the name ``GaussianMixture`` uses.
    """

    covariance_type: str = ""
    # Dims of the covariances' Deterministic after any (chain, draw) batch.
    covariance_dims: tuple = ()
    # How the prior's covariance scale enters: a Wishart factor ("full"), one Gamma rate
    # per coordinate ("diag") or one rate ("spherical").
    hyper_scale: str = "full"

    def add_precision(self, K, d, hyper):
        """Add the structure's random variables to the model being built.

        Returns
        -------
        prec_chol : tensor of shape (K, d, d)
            Lower Cholesky factors of the component precisions.
        covariances : tensor
            In scikit-learn's shape for the structure (stored as a Deterministic).
        add_means : callable
            ``add_means(m0, kappa, transform)`` adds the means' random variable, whose
            prior scale is the structure's covariance over ``kappa``.
        """
        raise NotImplementedError

    def start_values(self, covariances, hyper_values):
        """The structure's random variables at given covariances (constrained scale).

        Parameters
        ----------
        covariances : ndarray
            scikit-learn shape for the structure.
        hyper_values : dict
            The hyperparameters' values (see :func:`model_data`).

        Returns
        -------
        dict of str -> ndarray
        """
        raise NotImplementedError

    def jitter_scale(self, values, n_k, n_total):
        """Approximate posterior sd of each structure variable on the unconstrained scale.

        Parameters
        ----------
        values : dict
            :meth:`start_values` at the EM estimate.
        n_k : ndarray of shape (K,)
            Effective number of rows per component.
        n_total : float

        Returns
        -------
        dict of str -> ndarray
            Keyed by random-variable name, shaped like the variable.
        """
        raise NotImplementedError


def _tril_labels(d, features):
    rows, cols = np.tril_indices(d, -1)
    return [f"{features[i]},{features[j]}" for i, j in zip(rows, cols, strict=True)]


def _bartlett(hyper, batch, dims):
    """A Wishart(nu, (L L^T)) precision factor ``L A`` from Bartlett variables."""
    import pymc as pm
    import pytensor.tensor as pt

    L, nu = hyper["prior_precision_chol"], hyper["nu"]
    d = hyper["d"]
    idx = np.arange(d)
    chi2 = pm.ChiSquared("precision_chi2", nu=nu - idx.astype(float), dims=(*dims, FEATURE))
    A = pt.zeros((*batch, d, d))
    A = pt.set_subtensor(A[..., idx, idx], pt.sqrt(chi2))
    if d > 1:
        rows, cols = np.tril_indices(d, -1)
        off = pm.Normal("precision_offdiag", 0.0, 1.0, dims=(*dims, "tril"))
        A = pt.set_subtensor(A[..., rows, cols], off)
    return pt.matmul(L, A)


def _bartlett_start(precisions, L):
    """Bartlett variables of given precisions under the prior factor ``L``."""
    U = np.linalg.cholesky(precisions)
    A = np.linalg.solve(L, U)  # L^-1 U: lower triangular with a positive diagonal
    d = A.shape[-1]
    values = {"precision_chi2": np.diagonal(A, axis1=-2, axis2=-1) ** 2}
    if d > 1:
        rows, cols = np.tril_indices(d, -1)
        values["precision_offdiag"] = A[..., rows, cols]
    return values


def _precision_normal_logp(value, mean, kappa, prec_chol):
    """log MvNormal(value | mean, (kappa U U^T)^-1), from the precision factor ``U``."""
    import pytensor.tensor as pt

    d = value.shape[-1]
    z = pt.sum((value - mean)[..., :, None] * prec_chol, axis=-2)  # U^T (x - m)
    half_logdet = pt.sum(pt.log(pt.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)
    return 0.5 * d * (pt.log(kappa) - LOG_2PI) + half_logdet - 0.5 * kappa * pt.sum(z**2, axis=-1)


def _precision_normal_random(mean, kappa, prec_chol, rng=None, size=None):
    """Draws of ``mean + (sqrt(kappa) U^T)^-1 z``: covariance (kappa U U^T)^-1."""
    size = (
        tuple(size)
        if size is not None
        else np.broadcast_shapes(np.shape(mean)[:-1], np.shape(prec_chol)[:-2])
    )
    d = np.shape(mean)[-1]
    z = rng.standard_normal((*size, d))
    U = np.broadcast_to(prec_chol, (*size, d, d))
    x = np.linalg.solve(np.swapaxes(U, -1, -2), z[..., None])[..., 0]
    return mean + x / np.sqrt(kappa)


def _precision_normal(name, mean, kappa, prec_chol, transform):
    """``MvNormal(mean, (kappa P)^-1)`` per component, from the precision factor of ``P``.

    Written as a ``pm.CustomDist`` in precision form: ``pm.MvNormal(tau=...)`` fails on a
    batch of precisions in PyMC 6.4, and ``pm.MvNormal(cov=...)`` needs K matrix
    inversions and Cholesky factorizations per gradient (3x slower per NUTS step here).
    """
    import pymc as pm

    kwargs = {} if transform is None else {"transform": transform}
    return pm.CustomDist(
        name,
        mean,
        kappa,
        prec_chol,
        logp=_precision_normal_logp,
        random=_precision_normal_random,
        signature="(d),(),(d,d)->(d)",
        dims=(COMPONENT, FEATURE),
        **kwargs,
    )


def _gamma_precisions(hyper, dims):
    """Precisions ``~ Gamma(nu / 2, rate = scale / 2)``: the conjugate prior of a variance."""
    import pymc as pm

    return pm.Gamma(
        "precisions", alpha=hyper["nu"] / 2.0, beta=hyper["prior_scale"] / 2.0, dims=dims
    )


def _precision_normal_means(prec_chol):
    """``add_means`` of a structure with a precision factor: ``MvNormal(m0, (kappa P)^-1)``."""

    def add_means(m0, kappa, transform=None):
        return _precision_normal("means", m0, kappa, prec_chol, transform)

    return add_means


def _normal_means(precision):
    """``add_means`` of a diagonal structure: independent normals of variance
    ``1 / (kappa * precision)``, ``precision`` broadcasting to (component, feature)."""

    def add_means(m0, kappa, transform=None):
        import pymc as pm
        import pytensor.tensor as pt

        sigma = 1.0 / pt.sqrt(kappa * precision)
        kwargs = {} if transform is None else {"transform": transform}
        return pm.Normal("means", mu=m0, sigma=sigma, dims=(COMPONENT, FEATURE), **kwargs)

    return add_means


def _inverse_from_chol(U):
    """``(U U^T)^-1`` from lower factors ``U`` (..., d, d)."""
    import pytensor.tensor as pt
    from pytensor.tensor.linalg import solve_triangular

    d = U.shape[-1]
    eye = pt.eye(d)
    if U.ndim == 2:
        U_inv = solve_triangular(U, eye, lower=True)
    else:
        U_inv = pt.stack([solve_triangular(U[k], eye, lower=True) for k in range(U.type.shape[0])])
    return pt.matmul(pt.swapaxes(U_inv, -1, -2), U_inv)


class FullForm(PosteriorForm):
    """Each component its own precision ``P_k ~ Wishart(nu, Lambda^-1)`` (mclust VVV)."""

    covariance_type = "full"
    covariance_dims = (COMPONENT, FEATURE, FEATURE_)

    def add_precision(self, K, d, hyper):

        U = _bartlett(hyper, (K,), (COMPONENT,))
        covs = _inverse_from_chol(U)

        return U, covs, _precision_normal_means(U)

    def start_values(self, covariances, hyper_values):
        return _bartlett_start(np.linalg.inv(covariances), hyper_values["prior_precision_chol"])

    def jitter_scale(self, values, n_k, n_total):
        per = 1.0 / np.sqrt(n_k)[:, None]
        out = {"precision_chi2": np.broadcast_to(per, values["precision_chi2"].shape)}
        if "precision_offdiag" in values:
            d = values["precision_chi2"].shape[-1]
            _, cols = np.tril_indices(d, -1)
            out["precision_offdiag"] = np.sqrt(values["precision_chi2"][:, cols]) * per
        return out


class TiedForm(PosteriorForm):
    """One precision ``P ~ Wishart(nu, Lambda^-1)`` shared by all components (mclust EEE)."""

    covariance_type = "tied"
    covariance_dims = (FEATURE, FEATURE_)

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        U = _bartlett(hyper, (), ())
        cov = _inverse_from_chol(U)

        return pt.broadcast_to(U, (K, d, d)), cov, _precision_normal_means(U)

    def start_values(self, covariances, hyper_values):
        return _bartlett_start(np.linalg.inv(covariances), hyper_values["prior_precision_chol"])

    def jitter_scale(self, values, n_k, n_total):
        per = 1.0 / np.sqrt(max(n_total, 1.0))
        out = {"precision_chi2": np.full(values["precision_chi2"].shape, per)}
        if "precision_offdiag" in values:
            d = values["precision_chi2"].shape[-1]
            _, cols = np.tril_indices(d, -1)
            out["precision_offdiag"] = np.sqrt(values["precision_chi2"][cols]) * per
        return out


class DiagForm(PosteriorForm):
    """Each component its own diagonal precision, ``tau_kj ~ Gamma`` (mclust VVI)."""

    covariance_type = "diag"
    covariance_dims = (COMPONENT, FEATURE)
    hyper_scale = "diag"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, (COMPONENT, FEATURE))
        U = pt.sqrt(tau)[:, :, None] * pt.eye(d)[None]

        return U, 1.0 / tau, _normal_means(tau)

    def start_values(self, covariances, hyper_values):
        return {"precisions": 1.0 / np.asarray(covariances, dtype=float)}

    def jitter_scale(self, values, n_k, n_total):
        return {
            "precisions": np.broadcast_to(1.0 / np.sqrt(n_k)[:, None], values["precisions"].shape)
        }


class SphericalForm(PosteriorForm):
    """Each component its own single precision, ``tau_k ~ Gamma`` (mclust VII)."""

    covariance_type = "spherical"
    covariance_dims = (COMPONENT,)
    hyper_scale = "spherical"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, (COMPONENT,))
        U = pt.sqrt(tau)[:, None, None] * pt.eye(d)[None]

        return U, 1.0 / tau, _normal_means(tau[:, None])

    def start_values(self, covariances, hyper_values):
        return {"precisions": 1.0 / np.asarray(covariances, dtype=float)}

    def jitter_scale(self, values, n_k, n_total):
        return {"precisions": 1.0 / np.sqrt(n_k)}


class SharedSphericalForm(PosteriorForm):
    """One precision shared by every component and coordinate, ``tau ~ Gamma`` (mclust EII).

    The Gamma analogue of the spherical prior for a single shared variance: the EM
    engine's MAP for EII is mclust's, which leaves this scale out for K >= 2, so its
    estimate is near, not at, this model's mode (the chains start there all the same).
    """

    covariance_type = "EII"
    covariance_dims = (COMPONENT, FEATURE, FEATURE_)
    hyper_scale = "spherical"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, ())
        U = pt.sqrt(tau) * pt.broadcast_to(pt.eye(d), (K, d, d))

        return U, pt.broadcast_to(pt.eye(d) / tau, (K, d, d)), _normal_means(tau)

    def start_values(self, covariances, hyper_values):
        cov = np.asarray(covariances, dtype=float)
        return {"precisions": np.asarray(1.0 / np.mean(np.diagonal(cov[0])))}

    def jitter_scale(self, values, n_k, n_total):
        return {"precisions": np.asarray(1.0 / np.sqrt(max(n_total, 1.0)))}


class SharedDiagForm(PosteriorForm):
    """One diagonal precision shared by every component, ``tau_j ~ Gamma`` (mclust EEI).

    The EM engine's MAP for EEI (mclust's update, with the scale's diagonal) is this
    model's mode in the variances.
    """

    covariance_type = "EEI"
    covariance_dims = (COMPONENT, FEATURE, FEATURE_)
    hyper_scale = "diag"

    def add_precision(self, K, d, hyper):
        import pytensor.tensor as pt

        tau = _gamma_precisions(hyper, (FEATURE,))
        U = pt.broadcast_to(pt.sqrt(tau)[:, None] * pt.eye(d), (K, d, d))

        cov = pt.broadcast_to((1.0 / tau)[:, None] * pt.eye(d), (K, d, d))
        return U, cov, _normal_means(tau)

    def start_values(self, covariances, hyper_values):
        cov = np.asarray(covariances, dtype=float)
        return {"precisions": 1.0 / np.diagonal(cov[0]).copy()}

    def jitter_scale(self, values, n_k, n_total):
        return {"precisions": np.full(values["precisions"].shape, 1.0 / np.sqrt(max(n_total, 1)))}


#: The structures the posterior supports, by the name ``GaussianMixture`` gives them.
POSTERIOR_FORMS = {
    form.covariance_type: form
    for form in (
        FullForm(), TiedForm(), DiagForm(), SphericalForm(), SharedSphericalForm(),
        SharedDiagForm(),
    )
}  # fmt: skip


def posterior_form(covariance_type):
    """The :class:`PosteriorForm` of a covariance structure (scikit-learn's or mclust's
    name), or an error naming the closest supported structure."""
    from bayes_gmm.structures import canonical_name, get_structure

    structure = get_structure(covariance_type)
    form = POSTERIOR_FORMS.get(canonical_name(structure))
    if form is None:
        closest = canonical_name(structure.closest_posterior_structure())
        supported = ", ".join(POSTERIOR_FORMS)
        raise ValueError(
            f"The posterior supports covariance_type {supported}; {covariance_type!r} has no "
            f"proper prior with an unconstrained parameterization. The closest supported "
            f"structure is {closest!r}: use covariance_type={closest!r}."
        )
    return form


# ---------------------------------------------------------------------------
# Ordering the first coordinate of the means (relabel="ordered")
# ---------------------------------------------------------------------------


def _first_column_ordered():
    """A transform that keeps ``means[:, 0]`` strictly increasing over the components."""
    import pytensor.tensor as pt
    from pymc.logprob.transforms import Transform

    class FirstColumnOrdered(Transform):
        name = "first_column_ordered"

        def forward(self, value, *inputs):
            first = value[:, 0]
            y0 = pt.concatenate([first[:1], pt.log(first[1:] - first[:-1])])
            return pt.set_subtensor(value[:, 0], y0)

        def backward(self, value, *inputs):
            y0 = value[:, 0]
            first = pt.concatenate([y0[:1], y0[0] + pt.cumsum(pt.exp(y0[1:]))])
            return pt.set_subtensor(value[:, 0], first)

        def log_jac_det(self, value, *inputs):
            # One term per component (the means' logp is per component): log of the gaps.
            return pt.concatenate([pt.zeros((1,)), value[1:, 0]])

    return FirstColumnOrdered()


# ---------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------


def model_data(X, sample_weight, resolved, covariance_type):
    """Values of the model's ``pm.Data`` containers for one data set and prior.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    resolved : ResolvedPrior
    covariance_type : str
        The structure whose hyperparameters to give (EII and EEI take the diagonal of
        ``resolved``'s full scale).

    Returns
    -------
    dict of str -> ndarray
    """
    values = {
        "X_data": np.ascontiguousarray(X, dtype=float),
        "sample_weight": np.ascontiguousarray(sample_weight, dtype=float),
        "prior_mean": np.asarray(resolved.mean, dtype=float),
        "alpha": np.asarray(resolved.weight_concentration, dtype=float),
        "kappa": np.asarray(resolved.mean_precision, dtype=float),
        "nu": np.asarray(resolved.degrees_of_freedom, dtype=float),
    }
    scale = np.asarray(resolved.scale, dtype=float)
    kind = posterior_form(covariance_type).hyper_scale
    if kind == "full":
        # The Wishart scale of the precision is Lambda^-1; its Cholesky factor L.
        values["prior_precision_chol"] = np.linalg.cholesky(np.linalg.inv(scale))
    else:
        diagonal = np.diagonal(scale) if scale.ndim == 2 else scale
        values["prior_scale"] = diagonal if kind == "diag" else np.asarray(np.mean(diagonal))
    return values


def _static_shape(name, d):
    """The data's feature count is fixed per model (it sizes the density's features)."""
    return (None, d) if name == "X_data" else None


def build_model(
    X,
    n_components,
    covariance_type="full",
    prior=None,
    sample_weight=None,
    *,
    ordered=False,
    feature_names=None,
):
    """The PyMC model of a Gaussian mixture for data ``X``, labels summed out.

    Parameters
    ----------
    X : ndarray or DataFrame of shape (n_samples, n_features)
        Finite data (validated by the caller); a DataFrame's columns name the features.
    n_components : int
    covariance_type : str, default="full"
        One of :data:`POSTERIOR_FORMS` ("full", "tied", "diag", "spherical", "EII",
        "EEI") or its mclust name ("VVV", "EEE", "VVI", "VII").
    prior : GaussianMixturePrior, ResolvedPrior or None, default=None
        ``None``: ``GaussianMixturePrior()`` resolved on ``X``.
    sample_weight : ndarray of shape (n_samples,), default=None
        Multiplies each row's log-likelihood (integer weights equal repeated rows).
    ordered : bool, default=False
        Constrain ``means[:, 0]`` to increase with the component index.
    feature_names : list of str, default=None
        Labels of the ``feature`` coordinate (default: a DataFrame's columns, else
        ``x0, x1, ...``).

    Returns
    -------
    pymc.Model
        Coords ``component``, ``feature``, ``feature_``, ``obs`` (and ``tril`` for the
        Bartlett off-diagonals). Random variables ``weights`` (Dirichlet), ``means``
        and the structure's precision variables (see :data:`POSTERIOR_FORMS`);
        Deterministics ``covariances`` (scikit-learn's shape for the structure) and
        ``precisions_cholesky`` (component, feature, feature_); the observed ``X`` (obs,
        feature). Data containers ``X_data``, ``sample_weight`` and the hyperparameters
        (``prior_mean``, ``alpha``, ``kappa``, ``nu``, ``prior_precision_chol`` or
        ``prior_scale``). ``model.bayes_gmm`` holds ``(n_components, covariance_type,
        ordered)``.

    Examples
    --------
    >>> import pymc as pm
    >>> from bayes_gmm.datasets import load_faithful
    >>> from bayes_gmm.model import build_model
    >>> model = build_model(load_faithful().to_numpy(), 2, "tied")
    >>> sorted(rv.name for rv in model.free_RVs)
    ['means', 'precision_chi2', 'precision_offdiag', 'weights']
    >>> prior = pm.sample_prior_predictive(draws=10, model=model)  # doctest: +SKIP
    """
    import pymc as pm

    form = posterior_form(covariance_type)
    if feature_names is None and hasattr(X, "columns"):
        feature_names = [str(c) for c in X.columns]
    X = np.asarray(X, dtype=float)
    n, d = X.shape
    K = int(n_components)
    w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=float)
    if prior is None:
        prior = GaussianMixturePrior()
    missing = bool(np.isnan(X).any())
    if isinstance(prior, ResolvedPrior):
        resolved = prior
    else:
        # As GaussianMixture(missing="em"): the data-scaled defaults from the
        # column-mean-imputed data.
        X_full = _missing.impute_column_means(X, w) if missing else X
        resolved = prior.resolve(X_full, K, covariance_type, sample_weight=w)
    values = model_data(X, w, resolved, covariance_type)
    if missing:
        order, columns, patterns = missing_blocks(X)
        values["pattern_order"] = order
        values["pattern_columns"] = columns
    features = [f"x{j}" for j in range(d)] if feature_names is None else list(feature_names)
    coords = {
        COMPONENT: np.arange(K),
        FEATURE: features,
        FEATURE_: features,
        OBS: np.arange(n),
    }
    if d > 1:
        coords["tril"] = _tril_labels(d, features)
    if missing:
        coords["position"] = np.arange(d)

    with pm.Model(coords=coords) as model:
        # pm.Data refuses NaN (it points to PyMC's imputation, which samples every missing
        # value): X_data is created with zeros in their place, then holds the data as they
        # are, since the likelihood integrates the missing values out and reads only the
        # observed entries.
        initial = dict(values, X_data=np.nan_to_num(values["X_data"]))
        data = {
            name: pm.Data(name, value, dims=_DATA_DIMS.get(name), shape=_static_shape(name, d))
            for name, value in initial.items()
        }
        if missing:
            data["X_data"].set_value(values["X_data"])
        hyper = dict(data, d=d)
        weights = pm.Dirichlet("weights", a=data["alpha"] * np.ones(K), dims=COMPONENT)
        prec_chol, covariances, add_means = form.add_precision(K, d, hyper)
        pm.Deterministic("covariances", covariances, dims=form.covariance_dims)
        pm.Deterministic("precisions_cholesky", prec_chol, dims=(COMPONENT, FEATURE, FEATURE_))
        ordering = _first_column_ordered() if ordered else None
        means = add_means(data["prior_mean"], data["kappa"], ordering)
        density = {
            "logp": mixture_log_density,
            "random": mixture_random,
            "signature": "(k),(k,d),(k,d,d),()->(d)",
        }
        extra = ()
        if missing:  # the rows' pattern order too; the density of their observed values
            extra = (data["pattern_order"], data["pattern_columns"])
            density = {
                "logp": partial(observed_mixture_log_density, patterns=patterns),
                "random": observed_mixture_random,
                "signature": "(k),(k,d),(k,d,d),(),(),(d)->(d)",
            }
        pm.CustomDist(
            "X",
            weights,
            means,
            prec_chol,
            data["sample_weight"],
            *extra,
            **density,
            observed=data["X_data"],
            dims=(OBS, FEATURE),
        )
    model.bayes_gmm = (K, covariance_type, bool(ordered))
    return model
