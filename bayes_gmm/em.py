"""EM for Gaussian mixtures: maximum likelihood, or MAP under a conjugate prior.

The estimator follows scikit-learn's ``GaussianMixture`` (same parameters, attributes and
methods) and adds sample weights, a prior for MAP estimation, ICL, and an objective that is
reported at the returned parameters. The E-step produces sufficient statistics and the
M-step consumes them (:mod:`bayes_gmm._gaussian`); both are vectorized over components
and stream over chunks of rows.
"""

from __future__ import annotations

import functools
import numbers
import time
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.cluster import KMeans, kmeans_plusplus
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, InvalidParameterError, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from bayes_gmm import _dask, _missing, _streaming
from bayes_gmm import _gaussian as g
from bayes_gmm._e_step import Context, e_step
from bayes_gmm._validation import (
    check_finite_numeric,
    check_n_components,
    check_real,
    check_sample_weight,
    column_extremes,
    warn_constant_columns,
)
from bayes_gmm.priors import GaussianMixturePrior, _check_prior
from bayes_gmm.structures import (
    MCLUST_MODELS,
    canonical_name,
    get_layout,
    get_structure,
    layout_of,
)

__all__ = ["DegenerateFitWarning", "GaussianMixture", "n_parameters"]

n_parameters = g.n_parameters

INIT_PARAMS = ("kmeans", "k-means++", "random", "random_from_data")
MISSING = ("error", "em")

#: What each parameter is for, added to scikit-learn's terser InvalidParameterError.
_PARAMETER_ADVICE = {
    "n_components": "It is the number of components K; bayes_gmm.select_model chooses K by BIC.",
    "covariance_type": (
        "mclust's names: 'full' is VVV, 'tied' EEE, 'diag' VVI, 'spherical' VII; its other "
        "models are accepted by their upper-case codes (bayes_gmm.structures)."
    ),
    "tol": "It is the stopping threshold on the change of the objective per sample (e.g. 1e-5).",
    "reg_covar": (
        "It is added to every covariance's diagonal: 0 for none, or regularize with "
        "prior=GaussianMixturePrior() instead."
    ),
    "max_iter": "It counts M-steps; max_iter=0 returns the initialization.",
    "prior": "Pass None for maximum likelihood or bayes_gmm.GaussianMixturePrior() for MAP.",
    "missing": f'missing must be one of {MISSING}: "em" fits with NaN read as missing at random.',
    "learning_decay": "learning_decay must lie in (0.5, 1] for online EM (partial_fit) to "
    "converge.",
}


class DegenerateFitWarning(UserWarning):
    """A component collapsed or a covariance was singular; the fit was regularized."""


@dataclass
class _Run:
    """One EM run from one initialization (centered frame)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray
    prec_chol: np.ndarray
    objective: float = -np.inf
    history: list = field(default_factory=list)
    converged: bool = False
    n_iter: int = 0
    repaired: dict = field(default_factory=dict)
    emptied: set = field(default_factory=set)


class GaussianMixture(DensityMixin, BaseEstimator):
    """Gaussian mixture fitted by EM: maximum likelihood, or MAP under a prior.

    A drop-in for :class:`sklearn.mixture.GaussianMixture` that is faster (the E- and
    M-steps are vectorized over components), accepts ``sample_weight``, reports the
    objective at the returned parameters, returns components in a canonical order, and
    can regularize with a conjugate prior (``prior=GaussianMixturePrior()``, as mclust's
    ``priorControl``).

    Parameters
    ----------
    n_components : int, default=1
        Number of mixture components K.
    covariance_type : str, default="full"
        "full": each component has its own covariance matrix; "tied": one matrix shared
        by all; "diag": each has its own diagonal matrix; "spherical": each has its own
        single variance (mclust's VVV, EEE, VVI and VII). Also any of mclust's 14 codes
        ("EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "VEE", "EVE", "VVE", "EEV",
        "VEV", "EVV", "VVV"; see :mod:`bayes_gmm.structures`). The ten without a
        scikit-learn name store full (K, d, d) covariances and are fitted as mclust fits
        them: without ``reg_covar``, which would break their structure.
    tol : float, default=1e-5
        Convergence threshold on the change of the objective per unit of sample weight
        (per sample when unweighted), as scikit-learn's ``tol``. The default is tighter
        than scikit-learn's 1e-3, which stops flat likelihoods early: on Old Faithful
        (tied, K=3) 1e-3 ends at BIC 2342.8, 1e-5 at mclust's optimum, 2314.3.
    reg_covar : float, default=1e-6
        Added to the diagonal of every covariance in maximum likelihood fits. Not used
        under a prior, whose scale keeps covariances positive definite.
    max_iter : int, default=500
        Maximum number of EM iterations (M-steps) per initialization.
    n_init : int, default=1
        Number of initializations; the one with the highest objective is kept.
    init_params : {"kmeans", "k-means++", "random", "random_from_data"}, default="kmeans"
        How initial responsibilities are drawn (as in scikit-learn).
    weights_init : array-like of shape (n_components,), default=None
    means_init : array-like of shape (n_components, n_features), default=None
    precisions_init : array-like, default=None
        Shape by covariance type: (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical.
    random_state : int, RandomState instance or None, default=None
    warm_start : bool, default=False
        Start the next ``fit`` from the current solution (``n_init`` is then ignored).
    verbose : int, default=0
        1 prints each initialization's result, 2 also every ``verbose_interval`` iterations.
    verbose_interval : int, default=10
    prior : GaussianMixturePrior or None, default=None
        ``None`` for maximum likelihood; a :class:`~bayes_gmm.priors.GaussianMixturePrior`
        for MAP estimation (its ``weight_concentration`` must be >= 1).
    missing : {"error", "em"}, default="error"
        What a NaN in ``X`` means. "error": it is refused. "em": a value missing at random;
        EM uses each row's observed coordinates and the conditional expectations of the
        missing ones (Ghahramani & Jordan, 1994), the log-likelihood and the criteria are
        the observed-data ones, and ``predict_proba`` etc. accept rows with NaN. Rows with
        every value missing are refused. Without NaN the fit is the ordinary one.
    learning_offset : float, default=10.0
    learning_decay : float, default=0.7
        Step size of :meth:`partial_fit` (online EM): batch ``t`` after the first gets
        weight ``rho_t = (learning_offset + t) ** -learning_decay`` in the running
        sufficient statistics. ``learning_decay`` must lie in (0.5, 1] (the steps then sum
        to infinity and their squares do not, so online EM converges); a larger offset damps
        the first batches. scikit-learn's ``LatentDirichletAllocation`` names them alike.
    conventions : {"bayes_gmm", "sklearn"}, default="bayes_gmm"
        Where this class differs from scikit-learn's on purpose, "sklearn" gives
        scikit-learn's behaviour: components in the order EM produced them (the order of
        ``means_init`` or of the initialization) instead of sorted by their first
        coordinate; :meth:`sample` returns scikit-learn's draws (grouped by component) from
        the same random state; ``lower_bound_`` is the objective per sample before the last
        M-step and the best of ``n_init`` is chosen by it; a covariance that collapses
        with ``reg_covar=0`` raises scikit-learn's ``ValueError`` instead of being repaired
        with a :class:`DegenerateFitWarning`; and "tied" starts from scikit-learn's
        covariance formula, which depends on the origin when ``init_params`` is
        "k-means++" or "random_from_data". ``tol`` and ``max_iter`` keep their defaults:
        pass ``tol=1e-3, max_iter=100`` for scikit-learn's.

    Attributes
    ----------
    weights_ : ndarray of shape (n_components,)
    means_ : ndarray of shape (n_components, n_features)
        Sorted by the first coordinate, so equal optima are reported identically (in EM's
        order with ``conventions="sklearn"``).
    covariances_ : ndarray
        (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical; (K, d, d) for mclust's
        other models.
    precisions_ : ndarray
        Inverses of ``covariances_``, same shapes.
    precisions_cholesky_ : ndarray
        Factors ``P`` with ``P @ P.T = precision``, same shapes.
    converged_ : bool
    n_iter_ : int
        M-steps taken by the best initialization.
    log_likelihood_ : float
        Total objective at the returned parameters: ``sum_i w_i log p(x_i)``, plus the log
        prior density under a prior (the log-posterior up to its normalizing constant).
    lower_bound_ : float
        ``log_likelihood_`` per unit of sample weight: the objective at the returned
        parameters. scikit-learn's ``lower_bound_`` is the value before the last M-step,
        ``lower_bounds_[-1]`` (it is ``lower_bound_`` with ``conventions="sklearn"``).
    lower_bounds_ : list of float
        The objective per unit of sample weight before each M-step of the best
        initialization, as scikit-learn's ``lower_bounds_``: ``history_[:-1] / total
        weight``.
    history_ : ndarray of shape (n_iter_ + 1,)
        The objective after 0, 1, ..., ``n_iter_`` M-steps of the best initialization;
        it never decreases (up to rounding).
    init_log_likelihoods_ : ndarray of shape (n_init,)
        Final objective of each initialization.
    prior_ : ResolvedPrior or None
        The prior's hyperparameters for the training data.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Defined when ``X`` has string column names (a DataFrame).
    n_passes_ : int
        Only after ``fit`` on a Dask collection: the passes over the data the fit took (the
        first computes the center, the checks and the uniform sample the starts run on;
        then one per EM iteration, all finishing starts sharing each pass).

    Notes
    -----
    ``bic``, ``aic`` and ``icl`` use scikit-learn's sign (lower is better):
    ``bic = -2 logL + p log n``. mclust reports ``2 logL - p log n`` (higher is better),
    so mclust's BIC is minus ours.

    Examples
    --------
    >>> from bayes_gmm import GaussianMixture
    >>> from bayes_gmm.datasets import load_faithful
    >>> X = load_faithful()
    >>> gm = GaussianMixture(3, covariance_type="tied", random_state=0).fit(X)
    >>> gm.means_.round(1)
    array([[ 2. , 54.5],
           [ 3.8, 77.6],
           [ 4.5, 80.9]])
    >>> round(gm.bic(X), 1)  # mclust: BIC -2314.316 for EEE, 3 components
    2314.3
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_components": [Interval(numbers.Integral, 1, None, closed="left")],
        "covariance_type": [StrOptions({"full", "tied", "diag", "spherical", *MCLUST_MODELS})],
        "tol": [Interval(numbers.Real, 0.0, None, closed="left")],
        "reg_covar": [Interval(numbers.Real, 0.0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "n_init": [Interval(numbers.Integral, 1, None, closed="left")],
        "init_params": [StrOptions(set(INIT_PARAMS))],
        "weights_init": ["array-like", None],
        "means_init": ["array-like", None],
        "precisions_init": ["array-like", None],
        "random_state": ["random_state"],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "verbose_interval": [Interval(numbers.Integral, 1, None, closed="left")],
        "prior": [GaussianMixturePrior, None],
        "missing": [StrOptions(set(MISSING))],
        "learning_offset": [Interval(numbers.Real, 0.0, None, closed="left")],
        "learning_decay": [Interval(numbers.Real, 0.5, 1.0, closed="right")],
        "conventions": [StrOptions({"bayes_gmm", "sklearn"})],
    }

    def __init__(
        self,
        n_components=1,
        *,
        covariance_type="full",
        tol=1e-5,
        reg_covar=1e-6,
        max_iter=500,
        n_init=1,
        init_params="kmeans",
        weights_init=None,
        means_init=None,
        precisions_init=None,
        random_state=None,
        warm_start=False,
        verbose=0,
        verbose_interval=10,
        prior=None,
        missing="error",
        learning_offset=10.0,
        learning_decay=0.7,
        conventions="bayes_gmm",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.tol = tol
        self.reg_covar = reg_covar
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.weights_init = weights_init
        self.means_init = means_init
        self.precisions_init = precisions_init
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.verbose_interval = verbose_interval
        self.prior = prior
        self.missing = missing
        self.learning_offset = learning_offset
        self.learning_decay = learning_decay
        self.conventions = conventions

    # ------------------------------------------------------------------ validation
    def _validate_X(self, X, reset):
        allow_nan = self.missing == "em"
        check_finite_numeric(X, allow_nan=allow_nan)
        X = validate_data(
            self,
            X,
            reset=reset,
            dtype=[np.float64, np.float32],
            ensure_min_samples=2 if reset else 1,
            ensure_all_finite="allow-nan" if allow_nan else True,
        )
        if allow_nan and np.isnan(X).any():
            _missing.check_missing_rows(X)
        return X

    def _validate_parameters(self):
        """scikit-learn's parameter validation (InvalidParameterError), with our advice."""
        try:
            self._validate_params()
        except InvalidParameterError as exc:
            name = str(exc).split("'")[1] if "'" in str(exc) else ""
            if name in _PARAMETER_ADVICE:
                raise InvalidParameterError(f"{exc} {_PARAMETER_ADVICE[name]}") from None
            raise

    def _check_parameters(self, n_samples, n_features):
        check_n_components(self.n_components, n_samples)
        layout = get_structure(self.covariance_type).layout
        check_real(self.tol, "tol", minimum=0.0)
        check_real(self.reg_covar, "reg_covar", minimum=0.0)
        if self.init_params not in INIT_PARAMS:
            raise ValueError(f"init_params must be one of {INIT_PARAMS}, got {self.init_params!r}.")
        _check_prior(self.prior)
        K, d = self.n_components, n_features
        inits = {}
        # Each message starts with scikit-learn's words (code may match them), then says
        # what to pass instead.
        if self.weights_init is not None:
            w = check_finite_numeric(self.weights_init, name="weights_init").astype(float)
            if w.shape != (K,):
                raise ValueError(
                    f"The parameter 'weights' should have the shape of ({K},), but got "
                    f"{w.shape}: weights_init needs one weight per component."
                )
            if np.any(w < 0) or np.any(w > 1):
                raise ValueError(
                    # scikit-learn's text, whose labels are swapped: "max" precedes the min.
                    "The parameter 'weights' should be in the range [0, 1], but got max value "
                    f"{w.min():.5f}, min value {w.max():.5f}: weights_init holds the mixing "
                    f"proportions, from {w.min():.5g} to {w.max():.5g} here; pass values in "
                    "[0, 1] that sum to 1."
                )
            if not np.isclose(w.sum(), 1.0):
                raise ValueError(
                    "The parameter 'weights' should be normalized, but got sum(weights) = "
                    f"{w.sum():.5f}: weights_init must sum to 1; divide it by its sum."
                )
            inits["weights"] = w
        if self.means_init is not None:
            m = check_finite_numeric(self.means_init, name="means_init").astype(float)
            if m.shape != (K, d):
                raise ValueError(
                    f"The parameter 'means' should have the shape of ({K}, {d}), but got "
                    f"{m.shape}: means_init needs one row per component and one column per "
                    "feature of X."
                )
            inits["means"] = m
        if self.precisions_init is not None:
            ctype = self.covariance_type
            shape = get_layout(layout).covariance_shape(K, d)
            p = check_finite_numeric(self.precisions_init, name="precisions_init").astype(float)
            if p.shape != shape:
                raise ValueError(
                    f"The parameter '{ctype} precision' should have the shape of {shape}, but "
                    f"got {p.shape}: that is precisions_init's shape for covariance_type="
                    f"{ctype!r} with {K} components and {d} features."
                )
            if get_layout(layout).stores_matrices:
                mats = p if p.ndim == 3 else p[None]
                if not np.allclose(mats, np.swapaxes(mats, 1, 2)) or np.any(
                    np.linalg.eigvalsh(mats) <= 0
                ):
                    raise ValueError(
                        f"'{ctype} precision' should be symmetric, positive-definite: each "
                        "matrix of precisions_init is the inverse of a covariance matrix; pass "
                        "e.g. np.linalg.inv(covariance)."
                    )
            elif np.any(p <= 0):
                raise ValueError(
                    f"'{ctype} precision' should be positive: precisions_init holds inverse "
                    "variances, which are > 0."
                )
            inits["covariances"] = g.covariances_from_precisions(p, ctype)
        return inits

    # ------------------------------------------------------------------ fitting
    def fit(self, X, y=None, sample_weight=None):
        """Estimate the parameters with EM.

        Parameters
        ----------
        X : array-like or Dask array or DataFrame of shape (n_samples, n_features)
            A Dask collection is never gathered: each EM iteration is one map-reduce of the
            blocks' sufficient statistics on the active Dask scheduler (a
            ``dask.distributed.Client`` for a cluster). The starts (``n_init``) run on a
            uniform sample of at most 100,000 rows drawn in the first pass; the best two
            then run on the full data. ``predict``, ``predict_proba`` and
            ``score_samples`` then return lazy Dask arrays.
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights; an integer weight counts like that many copies of the row.
            With Dask data: a Dask array or Series with the same row blocks.

        Returns
        -------
        self
        """
        if _dask.is_dask_collection(X):  # map-reduce over the blocks: see bayes_gmm._dask
            return _dask.fit(self, X, sample_weight)
        self._fit(X, sample_weight)
        return self

    def partial_fit(self, X, y=None, sample_weight=None):
        """Update the fit with one batch of rows: online (stepwise) EM.

        The first call on an unfitted estimator fits its batch by EM (``n_init``,
        ``init_params``, a ``prior``: as :meth:`fit`); each later call does one E-step on its
        batch, mixes the batch's sufficient statistics into the running ones with weight
        ``rho_t = (learning_offset + t) ** -learning_decay``, and takes the M-step (MAP under
        ``prior``, whose data-driven hyperparameters come from the first batch). After
        :meth:`fit`, the first call starts the running statistics from its batch at the
        fitted parameters. ``n_features_in_`` is fixed by the first call.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            One batch (NaN allowed with ``missing="em"``).
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None

        Returns
        -------
        self

        Notes
        -----
        ``n_iter_`` counts the first batch's EM iterations plus one per update,
        ``history_`` appends, per update, the log-likelihood per unit of weight of the
        batch at the parameters before the update, and ``log_likelihood_``
        is the running average of those times the total weight seen (an estimate: online
        EM never sees all the data at one parameter value). ``converged_`` is ``False``.
        """
        self._validate_parameters()
        if _dask.is_dask_collection(X):
            raise TypeError(
                "partial_fit takes in-memory batches (numpy or pandas); fit a Dask collection "
                "with fit, which streams over its blocks, or pass batch.compute()."
            )
        state = getattr(self, "_online", None)
        if not hasattr(self, "converged_"):
            X = self._fit(X, sample_weight)
            state = None
        else:
            X = self._validate_X(X, reset=False).astype(np.float64, copy=False)
        w = check_sample_weight(sample_weight, X.shape[0])
        if state is None:
            center = self.weights_ @ self.means_
            prior = None
            if self.prior_ is not None:
                prior = g.CenteredPrior.from_resolved(self.prior_, center)
            params = self._centered_parameters(center)
            self._online = _streaming.OnlineEM.start(
                X, w, center, params, canonical_name(self.covariance_type), self._reg_covar(), prior
            )
            return self
        center = state.center
        (weights, means, covs), batch_loglik = state.step(
            X, w, self._centered_parameters(center), self.learning_offset, self.learning_decay
        )
        prec_chol, covs, _ = g.precision_cholesky(covs, self.covariance_type)
        state.permute(self._component_order(means))  # as _store orders them
        run = _Run(weights, means, covs, prec_chol, n_iter=self.n_iter_ + 1)
        run.history = [*self.history_, batch_loglik / w.sum()]
        run.objective = state.stats.log_likelihood * state.n_seen
        self._store(run, center, self.init_log_likelihoods_, state.n_seen, self.means_.dtype)
        return self

    def _centered_parameters(self, center):
        """(weights, means - center, precision factors, covariances) of the fitted model."""
        return self.weights_, self.means_ - center, self.precisions_cholesky_, self.covariances_

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then return the most likely component of each row of ``X``.

        Returns
        -------
        labels : ndarray of shape (n_samples,)
        """
        if _dask.is_dask_collection(X):
            return _dask.fit(self, X, sample_weight).predict(X)
        X = self._fit(X, sample_weight)
        # Labels from the returned parameters, so fit_predict(X) equals fit(X).predict(X).
        return self._log_norm_and_resp(X)[1].argmax(axis=1)

    def _fit(self, X, sample_weight):
        """Fit on ``X`` and return it validated."""
        self._validate_parameters()  # first: missing decides whether validation lets NaN in
        X = self._validate_X(X, reset=True)
        # float32 data gets float32 parameters (as scikit-learn); EM itself runs in float64.
        dtype, X = X.dtype, X.astype(np.float64, copy=False)
        self.__dict__.pop("_online", None)  # a new fit ends any stream
        n_samples, n_features = X.shape
        inits = self._check_parameters(n_samples, n_features)
        w = check_sample_weight(sample_weight, n_samples)
        X_missing = None
        if self.missing == "em" and np.isnan(X).any():
            # Starts, the prior's data-driven hyperparameters and the warnings' data scale
            # use the column-mean-imputed data; EM itself uses the observed values only.
            X_missing, X = X, _missing.impute_column_means(X, w)
        extremes = column_extremes(X)
        warn_constant_columns(
            X, getattr(self, "feature_names_in_", None), stacklevel=4, extremes=extremes
        )
        ctype, K = canonical_name(self.covariance_type), self.n_components
        rows = g.chunk_rows(n_samples, K, n_features, ctype)

        if X_missing is None and g.n_workers(n_samples, rows) > 1:
            # The E-step's worker threads run one BLAS thread each. A multi-threaded BLAS
            # call anywhere in the fit (the centre, the M-step) leaves its threads spinning
            # for a while on the cores the workers need (README, bench_em's footnote).
            threads = g.single_threaded()
        else:
            threads = g.blas_threads_for(K, n_features, ctype)
        with threads:
            center = w @ X / w.sum()
            self.prior_ = None
            prior = None
            if self.prior is not None:
                self.prior_ = self.prior.resolve(X, K, ctype, sample_weight=w)
                prior = g.CenteredPrior.from_resolved(self.prior_, center)
            do_init = not (self.warm_start and hasattr(self, "converged_"))
            n_init = self.n_init if do_init else 1
            random_state = check_random_state(self.random_state)
            data_scale = _DataScale(X, extremes)
            context = Context(X, w, center, ctype, self._reg_covar(), prior, rows, K)
            if X_missing is not None:
                context.missing = X_missing - center

            best, objectives = self._run_inits(
                context, n_init, do_init, random_state, inits, center
            )

        if not best.converged and self.max_iter > 0:
            warnings.warn(
                "Best performing initialization did not converge. Try different init "
                "parameters, or increase max_iter, tol, or check for degenerate data. (EM ran "
                f"max_iter={self.max_iter} iterations, best of {n_init} initialization(s); the "
                "last change of the objective per sample was above tol; also check the data's "
                "scale.)",
                ConvergenceWarning,
                stacklevel=3,
            )
        self._warn_degenerate(best, data_scale)
        self._store(best, center, objectives, w.sum(), dtype)
        return X if X_missing is None else X_missing

    def _run_inits(self, ctx, n_init, do_init, random_state, inits, center):
        """EM from each initialization; the best run and every run's final objective."""
        best, objectives = None, []
        for init in range(n_init):
            previous = -np.inf
            if self.verbose:
                print(f"Initialization {init}")
                self._verbose_clock = [time.time()] * 2  # start of the init, last report
            if do_init:
                weights, means, covs = self._initial_parameters(ctx, random_state, inits)
            else:
                weights, means, covs = (
                    np.asarray(a, dtype=np.float64)
                    for a in (self.weights_, self.means_ - center, self.covariances_)
                )
                # As scikit-learn: the first change is measured against the objective before
                # the previous fit's last M-step, so refits with max_iter=1 converge exactly
                # where one long fit would.
                if len(self.history_) > 1:
                    previous = self.history_[-2]
            run = self._run_em(ctx, weights, means, covs, previous)
            objectives.append(run.objective)
            if self.verbose:
                self._print_init_end(run, ctx.w.sum())
            if best is None or self._ranking(run) > self._ranking(best):
                best = run
        return best, objectives

    def _ranking(self, run):
        """What picks the best initialization: the objective at the returned parameters, or
        with scikit-learn's conventions the bound before the last M-step."""
        if self.conventions == "sklearn":
            return run.history[-2] if len(run.history) > 1 else -np.inf
        return run.objective

    def _component_order(self, means):
        """The order components are reported in: by first coordinate, or as EM left them."""
        if self.conventions == "sklearn":
            return np.arange(means.shape[0])
        return np.argsort(means[:, 0], kind="stable")

    def _initial_parameters(self, ctx, random_state, inits):
        """Initial (weights, centered means, covariances): responsibilities, M-step, overrides."""
        if len(inits) == 3:  # everything given: no responsibilities to draw
            return inits["weights"], inits["means"] - ctx.center, inits["covariances"]
        X, w, K = ctx.X, ctx.w, ctx.K
        n_samples = X.shape[0]
        resp = np.zeros((n_samples, K))
        if self.init_params == "kmeans":
            labels = (
                KMeans(n_clusters=K, n_init=1, random_state=random_state)
                .fit(X, sample_weight=w)
                .labels_
            )
            resp[np.arange(n_samples), labels] = 1.0
        elif self.init_params == "random":
            resp = random_state.uniform(size=(n_samples, K))
            resp /= resp.sum(axis=1)[:, None]
        elif self.init_params == "random_from_data":
            # Unweighted, the same rows as scikit-learn; a weight makes a row likelier.
            p = None if ctx.unit_weights else w / w.sum()
            index = random_state.choice(n_samples, size=K, replace=False, p=p)
            resp[index, np.arange(K)] = 1.0
        else:
            _, index = kmeans_plusplus(X, K, random_state=random_state, sample_weight=w)
            resp[index, np.arange(K)] = 1.0
        d = X.shape[1]
        chunks = ctx.chunks()
        start, stop, feats = next(chunks)
        stats = g.summarize(feats, w[start:stop], resp[start:stop].T, ctx.ctype, d)
        for start, stop, feats in chunks:
            stats += g.summarize(feats, w[start:stop], resp[start:stop].T, ctx.ctype, d)
        g.finish_moments(stats, ctx.ctype, ctx.tied_moment)
        weights, means, covs = g.from_summaries(stats, ctx.ctype, ctx.reg_covar, ctx.prior)
        if ctx.prior is None:
            _spread_empty_starts(stats, covs, ctx)
            if self.conventions == "sklearn" and get_layout(ctx.ctype).shared:
                covs = _sklearn_tied_start(X, w, resp, ctx.reg_covar)
        if "means" in inits:
            means = inits["means"] - ctx.center
        return inits.get("weights", weights), means, inits.get("covariances", covs)

    def _run_em(self, ctx, weights, means, covs, previous=-np.inf):
        """EM from the given parameters; ``previous`` is the objective before them (warm start)."""
        prec_chol, covs, repaired = g.precision_cholesky(covs, ctx.ctype)
        run = _Run(weights, means, covs, prec_chol)
        run.repaired.update(repaired)
        tol = self.tol * ctx.w.sum()
        # scikit-learn's rule: the M-step that follows the E-step whose objective changed by
        # less than tol is still taken, and its parameters are returned; one more E-step
        # then measures the objective at them.
        converged = False
        for iteration in range(self.max_iter + 1):
            last = converged or iteration == self.max_iter  # no M-step follows
            stats = e_step(ctx, run.weights, run.means, run.prec_chol, moments=not last)
            objective = stats.log_likelihood + self._log_prior(ctx, run)
            run.history.append(objective)
            if last:
                run.converged = converged
                break
            if self.verbose and (iteration + 1) % self.verbose_interval == 0:
                self._print_iteration(iteration + 1, (objective - previous) / ctx.w.sum())
            converged = abs(objective - previous) < tol
            previous = objective
            weights, means, covs = g.from_summaries(
                stats, ctx.ctype, ctx.reg_covar, ctx.prior, previous=run.covariances
            )
            if ctx.prior is None:
                _keep_empty_components(stats, run, means, covs, ctx.ctype)
            prec_chol, covs, repaired = g.precision_cholesky(covs, ctx.ctype)
            run.repaired.update(repaired)
            run.weights, run.means, run.covariances, run.prec_chol = weights, means, covs, prec_chol
            run.n_iter = iteration + 1
        run.objective = run.history[-1]
        return run

    def _print_iteration(self, n_iter, change):
        """scikit-learn's per-iteration line; ``change`` is per unit of sample weight."""
        if self.verbose == 1:
            print(f"  Iteration {n_iter}")
        else:
            now = time.time()
            lapse, self._verbose_clock[1] = now - self._verbose_clock[1], now
            print(f"  Iteration {n_iter}\t time lapse {lapse:.5f}s\t ll change {change:.5f}")

    def _print_init_end(self, run, total_weight):
        """scikit-learn's line at the end of an initialization (its lower bound, too)."""
        status = "converged" if run.converged else "did not converge"
        if self.verbose == 1:
            print(f"Initialization {status}.")
        else:
            lapse = time.time() - self._verbose_clock[0]
            bound = run.history[-2 if len(run.history) > 1 else -1] / total_weight
            print(
                f"Initialization {status}. time lapse {lapse:.5f}s\t lower bound {bound:.5f}."
                f" Objective at the returned parameters {run.objective:.5f}."
            )

    def _reg_covar(self):
        """``reg_covar``, for the structures it is added to (scikit-learn's four)."""
        return self.reg_covar if get_structure(self.covariance_type).is_sklearn else 0.0

    def _log_prior(self, ctx, run):
        if self.prior_ is None:
            return 0.0
        return self.prior_.log_density(run.weights, run.means + ctx.center, run.covariances)

    def _warn_degenerate(self, run, data_scale):
        """Warn about emptied, collapsed or repaired components (``data_scale``: the data's
        :class:`_DataScale`)."""
        messages = []
        if run.emptied:
            messages.append(
                f"component(s) {sorted(run.emptied)} lost (almost) all their weight and were "
                "frozen at their last parameters"
            )
        collapsed = set(run.repaired)
        if self.prior is None:
            singular = np.atleast_1d(
                held_by_regularization(
                    run.covariances, self.covariance_type, self._reg_covar(), data_scale.bound
                )
            )
            if singular.any():  # the bound could not clear them: the exact scale decides
                singular = np.atleast_1d(
                    held_by_regularization(
                        run.covariances, self.covariance_type, self._reg_covar(), data_scale.value
                    )
                )
            if get_layout(self.covariance_type).shared:
                collapsed.update([-1] if singular[0] else [])
            else:
                collapsed.update(int(k) for k in np.flatnonzero(singular))
        if self.conventions == "sklearn" and (run.repaired or self._singular(run, data_scale)):
            raise ValueError(
                "Fitting the mixture model failed because some components have ill-defined "
                "empirical covariance (for instance caused by singleton or collapsed samples). "
                "Try to decrease the number of components, increase reg_covar, or scale the "
                "input data. (With the default conventions='bayes_gmm' the fit is repaired "
                "and warns instead.)"
            )
        if collapsed:
            which = (
                "the shared covariance" if -1 in collapsed else f"component(s) {sorted(collapsed)}"
            )
            messages.append(
                f"{which} collapsed onto a (nearly) lower-dimensional set, e.g. duplicated points, "
                "a constant column, or fewer points than features; the covariance is held positive "
                f"definite only by regularization (reg_covar={self.reg_covar:g}"
                + (", plus extra diagonal jitter" if run.repaired else "")
                + ")"
            )
        if messages:
            warnings.warn(
                "Degenerate fit: "
                + "; ".join(messages)
                + ". The model is usable, but consider fewer components, a larger reg_covar, "
                "dropping duplicated rows or constant columns, or a prior "
                "(prior=GaussianMixturePrior()).",
                DegenerateFitWarning,
                stacklevel=4,
            )

    def _singular(self, run, data_scale):
        """Whether a covariance is singular to rounding (scikit-learn's Cholesky would fail
        or not, by the luck of the rounding): its smallest variance is within
        ``n_features`` ulps of the data's largest, with no regularization."""
        if self._reg_covar() > 0 or self.prior is not None:
            return False
        covs = run.covariances
        smallest = get_layout(self.covariance_type).smallest_variances(covs).min()
        return smallest <= run.means.shape[1] * np.finfo(float).eps * data_scale.value

    def _store_run(self, run, center, total_weight, n_features, prior):
        """Make this estimator the result of ``run``, as ``fit`` on validated arrays would.

        For runs made outside ``fit`` (the selection grid's compiled EM): sets what ``fit``
        sets besides :meth:`_store` (no feature names; ``prior`` is the resolved prior).
        """
        self.n_features_in_ = n_features
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.prior_ = prior
        self._store(run, center, [run.objective], total_weight)
        return self

    def _store(self, run, center, objectives, total_weight, dtype=np.float64):
        """Set the fitted attributes from ``run``; the parameters in ``dtype``."""
        order = self._component_order(run.means)
        ctype = layout_of(self.covariance_type)
        # Summing to 1 to the last bit (the M-step's 10 eps guard leaves ~1e-16), as
        # scikit-learn's, so sample()'s multinomial accepts them.
        self.weights_ = run.weights[order] / run.weights.sum()
        self.means_ = run.means[order] + center
        if get_layout(ctype).shared:
            self.covariances_ = run.covariances
            self.precisions_cholesky_ = run.prec_chol
        else:
            self.covariances_ = run.covariances[order]
            self.precisions_cholesky_ = run.prec_chol[order]
        self.precisions_ = g.precisions_from_cholesky(self.precisions_cholesky_, ctype)
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "precisions_"):
            setattr(self, name, getattr(self, name).astype(dtype, copy=False))
        self.converged_ = run.converged
        self.n_iter_ = run.n_iter
        self.history_ = np.asarray(run.history)
        self.lower_bounds_ = list(self.history_[:-1] / total_weight)
        self.log_likelihood_ = float(run.objective)
        self.lower_bound_ = self.log_likelihood_ / total_weight
        if self.conventions == "sklearn":
            self.lower_bound_ = self.lower_bounds_[-1] if self.lower_bounds_ else -np.inf
        self.init_log_likelihoods_ = np.asarray(objectives)

    # ------------------------------------------------------------------ prediction
    def _log_norm_and_resp(self, X):
        """Per-row log p(x) and responsibilities of validated data, in chunks (float64)."""
        if _dask.is_dask_collection(X):  # lazy Dask arrays
            return _dask.log_norm_and_resp_lazy(self, X)
        ctype = layout_of(self.covariance_type)
        X = X.astype(np.float64, copy=False)
        weights, means, covs, prec_chol = (
            np.asarray(a, dtype=np.float64)
            for a in (self.weights_, self.means_, self.covariances_, self.precisions_cholesky_)
        )
        if self.missing == "em" and np.isnan(X).any():
            return _missing.log_norm_and_resp(X, weights, means, covs, ctype)
        center = weights @ means
        eta, const = g.natural_parameters(means - center, prec_chol, ctype)
        with np.errstate(divide="ignore"):
            const = const + np.log(weights)
        n_samples = X.shape[0]
        rows = g.chunk_rows(n_samples, *means.shape, ctype)
        with g.blas_threads_for(*means.shape, ctype):
            return self._log_norm_and_resp_chunks(X, rows, center, eta, const, prec_chol)

    def _log_norm_and_resp_chunks(self, X, rows, center, eta, const, prec_chol):
        ctype = self.covariance_type
        n_samples = X.shape[0]
        log_norm = np.empty(n_samples)
        resp = np.empty((n_samples, self.means_.shape[0]))
        for start in range(0, n_samples, rows):
            stop = start + rows
            feats = g.features(X[start:stop] - center, ctype)
            lp = g.linear_log_prob(feats, eta, const, ctype, prec_chol)
            log_norm[start:stop], resp_t = g.normalize(lp)
            resp[start:stop] = resp_t.T
        return log_norm, resp

    def _check_predict_input(self, X):
        if _dask.is_dask_collection(X):
            return _dask.check_predict_input(self, X)
        check_is_fitted(self)
        return self._validate_X(X, reset=False)

    def score_samples(self, X):
        """Log-density of the mixture at each row (the log-likelihood, also under a prior).

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        log_norm = self._log_norm_and_resp(self._check_predict_input(X))[0]
        return log_norm.astype(self.means_.dtype, copy=False)

    def score(self, X, y=None):
        """Mean log-likelihood per row of ``X``."""
        return float(self.score_samples(X).mean())

    def predict_proba(self, X):
        """Responsibilities: the probability of each component for each row.

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        resp = self._log_norm_and_resp(self._check_predict_input(X))[1]
        return resp.astype(self.means_.dtype, copy=False)

    def predict(self, X):
        """Most likely component of each row.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._log_norm_and_resp(self._check_predict_input(X))[1].argmax(axis=1)

    def sample(self, n_samples=1, random_state=None):
        """Draw rows from the fitted mixture, in random order.

        With ``conventions="sklearn"``, scikit-learn's draws instead: grouped by component,
        the same rows scikit-learn returns for the same parameters and random state.

        Parameters
        ----------
        n_samples : int, default=1
        random_state : int, numpy Generator or RandomState, or None
            ``None`` uses the estimator's ``random_state``, as scikit-learn does: with an
            int there, every call returns the same draws.

        Returns
        -------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of shape (n_samples,)
            The component each row was drawn from.
        """
        check_is_fitted(self)
        if (
            isinstance(n_samples, bool)
            or not isinstance(n_samples, numbers.Integral)
            or (n_samples < 1)
        ):
            raise ValueError(
                f"Invalid value for 'n_samples': {n_samples!r} . The sampling requires at least "
                "one sample: pass an integer n_samples >= 1."
            )
        if random_state is None:
            random_state = self.random_state
        if isinstance(random_state, np.random.Generator):
            rng = random_state
        else:
            rng = check_random_state(random_state)
        if self.conventions == "sklearn":
            return self._sample_as_sklearn(n_samples, rng)
        K, d = self.means_.shape
        labels = rng.choice(K, size=n_samples, p=self.weights_)
        z = rng.standard_normal((n_samples, d))
        layout = get_layout(self.covariance_type)
        for k in range(K):  # one pass per component; labels are i.i.d. so rows stay shuffled
            rows = labels == k
            cov = layout.component(self.covariances_, k)
            if layout.stores_matrices:
                z[rows] = z[rows] @ np.linalg.cholesky(cov).T
            else:
                z[rows] *= np.sqrt(cov)
        return z + self.means_[labels], labels

    def _sample_as_sklearn(self, n_samples, rng):
        """scikit-learn's ``sample``: per-component counts, then each component's rows."""
        counts = rng.multinomial(n_samples, self.weights_)
        layout = get_layout(self.covariance_type)
        d = self.means_.shape[1]
        blocks = []
        for k, (mean, count) in enumerate(zip(self.means_, counts, strict=True)):
            cov = layout.component(self.covariances_, k)
            if layout.stores_matrices:
                blocks.append(rng.multivariate_normal(mean, cov, int(count)))
            else:
                z = rng.standard_normal(size=(count, d))
                blocks.append(mean + z * np.sqrt(cov))
        labels = np.concatenate([np.full(c, k, dtype=np.int64) for k, c in enumerate(counts)])
        return np.vstack(blocks), labels

    # ------------------------------------------------------------------ display
    def summary(self):
        """One row per component: weight, mean and standard deviation of each feature.

        Returns
        -------
        pandas.DataFrame of shape (n_components, 1 + 2 * n_features)
        """
        import pandas as pd

        check_is_fitted(self)
        K, d = self.means_.shape
        names = getattr(self, "feature_names_in_", None)
        names = [str(n) for n in names] if names is not None else [f"x{j}" for j in range(d)]
        full = g.full_covariances(self.covariances_, self.covariance_type, K, d)
        var = np.diagonal(full, axis1=1, axis2=2)
        table = {"weight": self.weights_}
        table.update({f"mean[{n}]": self.means_[:, j] for j, n in enumerate(names)})
        table.update({f"sd[{n}]": np.sqrt(var[:, j]) for j, n in enumerate(names)})
        return pd.DataFrame(table, index=pd.RangeIndex(K, name="component"))

    def _summary_header(self):
        objective = "log-posterior" if self.prior is not None else "log-likelihood"
        status = "converged" if self.converged_ else "NOT converged"
        return (
            f"GaussianMixture: {self.n_components} component(s), covariance_type="
            f"{self.covariance_type!r}, {objective} {self.log_likelihood_:.4f}, {status} "
            f"after {self.n_iter_} iteration(s)"
        )

    def __repr__(self, N_CHAR_MAX=700):
        text = super().__repr__(N_CHAR_MAX)
        if hasattr(self, "converged_"):
            text += "\n" + self._summary_header() + "\n" + self.summary().round(4).to_string()
        return text

    def _repr_html_(self):
        if not hasattr(self, "converged_"):
            return super()._repr_html_inner()
        return f"<p><b>{self._summary_header()}</b></p>" + self.summary().round(4).to_html()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if hasattr(self, "converged_"):
            bundle["text/html"] = self._repr_html_()
        return bundle

    # ------------------------------------------------------------------ criteria
    def n_parameters(self):
        """Number of free parameters of the fitted model."""
        check_is_fitted(self)
        return g.n_parameters(self.n_components, self.n_features_in_, self.covariance_type)

    def bic(self, X):
        """Bayesian information criterion, ``-2 logL + p log n`` (lower is better).

        mclust's BIC is minus this value.
        """
        return self._criteria(self._check_predict_input(X))["bic"]

    def aic(self, X):
        """Akaike information criterion, ``-2 logL + 2 p`` (lower is better)."""
        return self._criteria(self._check_predict_input(X))["aic"]

    def icl(self, X):
        """Integrated completed likelihood: BIC plus the classification-entropy penalty.

        ``icl = bic - 2 sum_i log max_k r_ik`` (lower is better); ``icl >= bic``, with
        equality when every responsibility is 0 or 1.
        """
        return self._criteria(self._check_predict_input(X))["icl"]

    def _criteria(self, X, sample_weight=None, log_norm_and_resp=None):
        """Log-likelihood, BIC, AIC and ICL on validated ``X`` (one pass over the rows).

        With ``sample_weight`` a weight counts as that many copies of the row, so ``n`` in
        the BIC is the total weight. ``log_norm_and_resp`` is ``_log_norm_and_resp(X)``
        when the caller already has it.
        """
        if _dask.is_dask_collection(X):  # the three sums in one pass over the blocks
            loglik, n, top = _dask.criteria_sums(self, X, sample_weight)
            return criteria_from_sums(loglik, n, top, self.n_parameters())
        if log_norm_and_resp is None:
            log_norm_and_resp = self._log_norm_and_resp(X)
        log_norm, resp = log_norm_and_resp
        with np.errstate(divide="ignore"):
            log_top = np.log(resp.max(axis=1))
        if sample_weight is None:
            loglik, n, top = log_norm.sum(), X.shape[0], log_top.sum()
        else:
            loglik, n, top = sample_weight @ log_norm, sample_weight.sum(), sample_weight @ log_top
        # Not self.n_parameters(): its check_is_fitted costs more than this whole method on
        # a few hundred rows (a selection grid calls it once per cell).
        p = g.n_parameters(self.n_components, self.n_features_in_, self.covariance_type)
        return criteria_from_sums(loglik, n, top, p)


def criteria_from_sums(log_likelihood, n, log_top, n_parameters):
    """Log-likelihood, BIC, AIC and ICL from the data's sums.

    ``log_top`` is ``sum_i w_i log max_k r_ik``; ``n`` the total weight (rows when unweighted).
    """
    bic = -2.0 * log_likelihood + n_parameters * np.log(n)
    return {
        "log_likelihood": float(log_likelihood),
        "bic": float(bic),
        "aic": float(-2.0 * log_likelihood + 2.0 * n_parameters),
        "icl": float(bic - 2.0 * log_top),
    }


class _DataScale:
    """The data's largest column variance (or 1 if that is 0), the scale of the checks for
    degenerate covariances; ``bound`` is an upper bound of it from the columns' ranges
    (variance <= range ** 2 / 4) that clears most fits without the variance's passes."""

    def __init__(self, X, extremes):
        self.X = X
        largest_range = float(np.max(extremes[0] - extremes[1]))
        self.bound = largest_range**2 / 4 * (1 + 1e-12) if largest_range > 0 else 1.0

    @classmethod
    def known(cls, value):
        scale = cls.__new__(cls)
        scale.bound = scale.value = value
        return scale

    @functools.cached_property
    def value(self):
        return float(np.max(np.var(self.X, axis=0))) or 1.0


def held_by_regularization(covariances, covariance_type, reg_covar, data_scale):
    """Which maximum-likelihood covariances are positive definite only thanks to ``reg_covar``.

    Their unregularized smallest eigenvalue (variance) is zero up to rounding relative to
    ``data_scale``, the largest variance of the data. Works on any leading batch axes:
    returns one flag per covariance matrix (full, tied) or per component (diag, spherical).
    """
    smallest = get_layout(covariance_type).smallest_variances(covariances)
    return smallest - reg_covar <= 1e-9 * data_scale


def _spread_empty_starts(stats, covs, ctx):
    """Give components that start with no data the data's covariance.

    Their M-step covariance is 0 / 0 (about 1e-320 in practice), whose precision overflows
    the first E-step into NaN when no ``reg_covar`` hides it. EM then freezes them as
    emptied components (with a DegenerateFitWarning), as it does for one that empties later.
    """
    empty = stats.weight <= 1e-12 * stats.total_weight
    layout = get_layout(ctx.ctype)
    if not empty.any() or layout.shared:
        return
    pooled = np.atleast_2d(np.cov(ctx.X, rowvar=False, aweights=ctx.w, bias=True))
    pooled = layout.from_full(pooled[None], np.ones(1))
    layout.add_to_diagonal(pooled, ctx.reg_covar)
    covs[empty] = pooled[0]


def _sklearn_tied_start(X, w, resp, reg_covar):
    """scikit-learn's starting tied covariance, ``(X'X - sum_k N_k m_k m_k') / sum_k N_k``.

    It assumes responsibilities that sum to one per row; from "k-means++" and
    "random_from_data" (one row per component) they do not, and the result then depends on
    where the origin is. Ours is taken about the data's mean; this is for
    ``conventions="sklearn"``, to start where scikit-learn starts.
    """
    wr = resp * w[:, None]
    nk = wr.sum(axis=0) + 10 * np.finfo(float).eps
    means = wr.T @ X / nk[:, None]
    cov = (X.T @ (w[:, None] * X) - (nk * means.T) @ means) / nk.sum()
    cov.flat[:: cov.shape[0] + 1] += reg_covar
    return cov


def _keep_empty_components(stats, run, means, covs, ctype):
    """Freeze components whose weight vanished: their estimates would be 0 / 0."""
    empty = stats.weight <= 1e-12 * stats.total_weight
    if not empty.any():
        return
    means[empty] = run.means[empty]
    if ctype != "tied":
        covs[empty] = run.covariances[empty]
    run.emptied.update(int(k) for k in np.flatnonzero(empty))
