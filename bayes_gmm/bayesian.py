"""``BayesianGaussianMixture``: an EM-initialized NUTS posterior of a Gaussian mixture.

Stage 5 of the Bayesian pipeline, the one that ties the others together: EM/MAP fit
(:mod:`bayes_gmm.em`) -> the PyMC model (:mod:`bayes_gmm.model`) -> the chains' start
(:mod:`bayes_gmm.start`) -> NUTS through JAX (:mod:`bayes_gmm.sampling`) -> relabelling
(:mod:`bayes_gmm.relabel`) -> diagnostics (:mod:`bayes_gmm.diagnostics`) -> predictions
(:mod:`bayes_gmm.predictive`); the data tree is laid out by :mod:`bayes_gmm.datatree`,
files are :mod:`bayes_gmm.storage`.
Everything the fitted estimator knows is in ``idata_``, so
:meth:`BayesianGaussianMixture.save` and :meth:`BayesianGaussianMixture.load` need
nothing else (no pickle).
"""

from __future__ import annotations

import json
import numbers
import os
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state, check_scalar
from sklearn.utils.validation import check_is_fitted

from bayes_gmm._gaussian import full_covariances, precision_cholesky
from bayes_gmm._missing import check_missing_rows, impute_column_means
from bayes_gmm._validation import (
    check_data,
    check_int,
    check_n_components,
    check_probability,
    check_real,
    check_sample_weight,
)
from bayes_gmm.datatree import (
    build_tree,
    chunked_loo,
    log_likelihood_dataset,
    model_dataset,
    observed_rows,
    pointwise_dataset,
    posterior_draws,
)
from bayes_gmm.diagnostics import SamplingWarning, compute_diagnostics, warn_if_untrustworthy
from bayes_gmm.model import (
    COMPONENT,
    OBS,
    build_model,
    posterior_form,
)
from bayes_gmm.priors import GaussianMixturePrior
from bayes_gmm.relabel import relabel_posterior
from bayes_gmm.sampling import MASS_MATRICES, sample_nuts
from bayes_gmm.start import chain_starts, choose_metric, em_values, start_scales
from bayes_gmm.storage import FORMAT_VERSION, read_tree, write_tree
from bayes_gmm.structures import canonical_name, get_structure

__all__ = ["BayesianGaussianMixture", "SamplingWarning"]

_RELABEL = ("pivot", "ordered", None)
_MISSING = ("error", "em")
#: Entries (rows x draws) of the pointwise log-likelihood ``fit`` stores in ``idata_``
#: (200 MB of float64); above it, ``loo`` works through the rows in chunks.
LOG_LIKELIHOOD_LIMIT = 25_000_000
_FITTED = (
    "idata_",
    "model_",
    "em_",
    "prior_",
    "n_components_",
    "covariance_type_",
    "selection_",
    "diagnostics_",
    "timings_",
    "n_features_in_",
    "feature_names_in_",
    "_posterior_draws",
)
# The variables every model must keep (relabelling, predictions, summaries use them).
_REQUIRED = ("weights", "means", "covariances", "precisions_cholesky")
# Variables of the default model that only restate the covariances.
_INTERNAL = ("precisions_cholesky", "precision_chi2", "precision_offdiag", "precisions")


class BayesianGaussianMixture(DensityMixin, BaseEstimator):
    """Posterior of a Gaussian mixture by NUTS, started at the EM/MAP estimate.

    ``fit`` runs EM (with restarts) under ``prior`` to find the posterior mode, builds
    the PyMC model of the same mixture with the component labels summed out
    (:meth:`build_model`, by default :func:`bayes_gmm.model.build_model`), samples it
    with numpyro's NUTS through JAX with every chain started next to the EM estimate,
    relabels the draws to the EM estimate, and checks convergence.

    The model (``K`` components, ``d`` features; hyperparameters from
    ``prior.resolve(X, K, covariance_type)``, defaults as mclust's ``priorControl``)::

        weights          ~ Dirichlet(alpha * ones(K))
        full:  P_k       ~ Wishart(nu, Lambda^-1)       (Sigma_k = P_k^-1, k = 1..K)
        tied:  P         ~ Wishart(nu, Lambda^-1)       (shared)
        diag:  tau_kj    ~ Gamma(nu / 2, rate = lambda_j / 2)
        spherical: tau_k ~ Gamma(nu / 2, rate = lambda / 2)
        means_k | P_k    ~ MvNormal(m0, (kappa P_k)^-1)
        X_n              ~ sum_k weights_k MvNormal(means_k, P_k^-1)

    This is exactly the prior whose mode the EM engine finds for MAP, so the EM
    estimate is the posterior mode of this model (up to the Jacobian of the
    unconstrained scale NUTS works on). The fitted model is ``model_``: draw from its
    prior, plot its graph, or extend it (see :meth:`build_model`).

    Parameters
    ----------
    n_components : int or None, default=None
        Number of components K. ``None``: choose K (and, unless ``covariance_type`` is
        given, the covariance structure) by BIC with :func:`bayes_gmm.select_model`
        over K = 1..9 under the same prior: over every mclust model with a conjugate
        prior, and then the best cell whose structure the posterior supports. When the
        overall winner is a structure it does not support (e.g. VEV), a ``UserWarning``
        names both models and their BIC, and ``selection_.best_params`` differs from
        ``(covariance_type_, n_components_)``.
    covariance_type : {"full", "tied", "diag", "spherical", "EII", "EEI"} or None, default=None
        The structures with a proper prior and an unconstrained parameterization
        (mclust's VVV, EEE, VVI, VII, EII, EEI; either name works). ``None`` means "full"
        when ``n_components`` is an int, and "chosen by the selection grid" when it is
        ``None``. Other mclust models are refused with the closest supported one.
    prior : GaussianMixturePrior or None, default=None
        The prior for both the EM/MAP start and the posterior. ``None``:
        ``GaussianMixturePrior()`` (weakly informative, scaled to the data).
    draws : int, default=1000
        Posterior draws per chain, after tuning.
    tune : int, default=1000
        Tuning (warm-up) steps per chain; they are discarded.
    chains : int, default=4
    target_accept : float, default=0.8
        NUTS' target acceptance rate, in (0, 1). Raise it (0.95, 0.99) when there are
        divergences.
    mass_matrix : {"auto", "laplace", "adapt"}, default="auto"
        NUTS' metric. "laplace": dense, the inverse Hessian of the log posterior at each
        chain's start (the Laplace approximation's covariance around the EM estimate),
        re-estimated once from warm-up's draws when ``tune`` is long enough (one slow
        window): the posterior's correlations (a component's mean with its precision)
        cost no extra steps. Models with more than ``bayes_gmm.sampling.DENSE_LIMIT``
        free values use "adapt". "adapt": a diagonal metric learnt during warm-up,
        starting from the EM estimate's approximate posterior sds. "auto": "laplace"
        when the EM estimate's smallest component holds at least
        ``bayes_gmm.start.LAPLACE_MIN_COMPONENT_WEIGHT`` rows (sample weights summed), where the
        posterior is close to Gaussian; "adapt" on less data, where the Laplace metric
        made NUTS diverge several times as often (simulation-based calibration on 50
        rows, ``docs/calibration.md``).
    random_state : int, RandomState instance or None, default=None
        Seeds the EM restarts, the start jitter and the sampler: a fixed value gives
        identical draws.
    relabel : {"pivot", "ordered"} or None, default="pivot"
        "pivot": permute each draw's components to best match the EM estimate
        (Kullback-Leibler cost, Hungarian assignment). "ordered": constrain the first
        coordinate of the means to increase with the component index (no relabelling
        needed; only sensible when that coordinate separates the components).
        ``None``: keep the draws as sampled.
    progressbar : bool, default=False
        Show numpyro's progress bar.
    n_init : int, default=5
        EM restarts for the starting point.
    init_jitter : float, default=1.0
        Half-width of the uniform jitter added to each chain's start, in units of the
        approximate posterior standard deviation of each unconstrained parameter
        (``1 / sqrt(n_k)`` scaled). ``0`` starts all chains exactly at the EM estimate.
    cores : int or None, default=None
        Run the chains in parallel (one JAX CPU device each) unless ``cores=1``, which
        runs them one after the other (for example when several fits share the
        machine). ``None``: parallel when the machine has more than one core.
    missing : {"error", "em"}, default="error"
        What a NaN in ``X`` means. "error": it is refused. "em": a value missing at
        random: the EM start is ``GaussianMixture(missing="em")``'s, and the model's
        likelihood integrates the missing coordinates out (each row's density is that of
        its observed coordinates, :func:`bayes_gmm.missing_density.observed_mixture_log_density`).
        Memberships, predictive densities and the pointwise log-likelihood (``loo``) of
        rows with NaN are then those of their observed coordinates.
        :meth:`sample_posterior_predictive` draws complete rows. Rows with every value
        missing are refused.

    Attributes
    ----------
    model_ : pymc.Model
        The model that was sampled, holding the data. Every PyMC tool works on it
        (``pm.sample_prior_predictive``, ``pm.model_to_graphviz``,
        ``pm.compute_log_likelihood``, ``pm.sample``, ``pm.do`` ...).
    start_ : dict of str -> ndarray
        The EM estimate in the model's random variables, where the chains started:
        ``pm.sample(model=est.model_, initvals=est.start_)`` starts there too. (Not
        stored as ``model_``'s initial values: PyMC's graph tools such as
        ``pm.compute_log_likelihood`` refuse models that have them.)
    idata_ : xarray.DataTree
        Groups ``posterior`` (every variable of ``model_`` by its name and dims:
        ``weights`` (chain, draw, component), ``means`` (..., component, feature),
        ``covariances`` (by type: (..., component, feature, feature_) full, (...,
        feature, feature_) tied, (..., component, feature) diag, (..., component)
        spherical), ``precisions_cholesky`` and the structure's own variables),
        ``sample_stats``, ``observed_data`` (``X``), ``constant_data``
        (``sample_weight`` and the hyperparameters), ``log_likelihood`` (``X``,
        pointwise, when it fits in memory), ``em_estimate``; the configuration is in
        ``attrs``.
    em_ : GaussianMixture
        The EM/MAP fit the chains started from (also the relabelling pivot).
    prior_ : ResolvedPrior
    n_components_ : int
    covariance_type_ : str
    selection_ : ModelSelection or None
        The grid result when ``n_components`` was ``None``: its ``best_params`` is the
        overall winner, ``best_posterior_params()`` the model sampled.
    diagnostics_ : DiagnosticsReport
    timings_ : dict
        Seconds spent in each stage of the last ``fit`` ("em", "build", "compile",
        "sample" (JAX compiles the sampler on its first run in a process, or loads it
        from the disk cache), "relabel", "diagnostics", "output": the data tree and the
        pointwise log-likelihood) and in all of it ("total").
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        When ``X`` was a DataFrame.

    Examples
    --------
    >>> from bayes_gmm import BayesianGaussianMixture
    >>> from bayes_gmm.datasets import load_faithful
    >>> model = BayesianGaussianMixture(3, covariance_type="tied", random_state=0)
    >>> model.fit(load_faithful())  # doctest: +SKIP
    >>> model.summary()  # doctest: +SKIP
    >>> pm.model_to_graphviz(model.model_)  # doctest: +SKIP
    """

    def __init__(
        self,
        n_components=None,
        *,
        covariance_type=None,
        prior=None,
        draws=1000,
        tune=1000,
        chains=4,
        target_accept=0.8,
        mass_matrix="auto",
        random_state=None,
        relabel="pivot",
        progressbar=False,
        n_init=5,
        init_jitter=1.0,
        cores=None,
        missing="error",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.prior = prior
        self.draws = draws
        self.tune = tune
        self.chains = chains
        self.target_accept = target_accept
        self.mass_matrix = mass_matrix
        self.random_state = random_state
        self.relabel = relabel
        self.progressbar = progressbar
        self.n_init = n_init
        self.init_jitter = init_jitter
        self.cores = cores
        self.missing = missing

    # ------------------------------------------------------------------ checks

    def _check_params(self):
        check_int(self.draws, "draws", 1)
        check_int(self.tune, "tune", 0)
        check_int(self.chains, "chains", 1)
        check_int(self.n_init, "n_init", 1)
        check_probability(
            self.target_accept, "target_accept", " (e.g. 0.8, or 0.95 against divergences)"
        )
        check_real(self.init_jitter, "init_jitter", 0.0)
        if self.mass_matrix not in ("auto", *MASS_MATRICES):
            raise ValueError(
                f"mass_matrix must be one of {('auto', *MASS_MATRICES)}, got "
                f'{self.mass_matrix!r}: "auto" (the default), "laplace" (dense, from the '
                'Hessian at the start) or "adapt" (diagonal, learnt in warm-up).'
            )
        if self.cores is not None:
            check_int(self.cores, "cores", 1)
        if self.missing not in _MISSING:
            raise ValueError(
                f'missing must be one of {_MISSING}, got {self.missing!r}: "em" samples with '
                "NaN read as missing at random."
            )
        if self.relabel not in _RELABEL:
            raise ValueError(f"relabel must be one of {_RELABEL}, got {self.relabel!r}.")
        if self.covariance_type is not None:
            posterior_form(self.covariance_type)
        if self.prior is not None and not isinstance(self.prior, GaussianMixturePrior):
            raise TypeError(
                "prior must be a bayes_gmm.GaussianMixturePrior or None, got "
                f"{type(self.prior).__name__}."
            )

    # ------------------------------------------------------------ the model

    def build_model(self, X, n_components, covariance_type, prior, sample_weight):
        """The PyMC model to sample: override this to change the model.

        The default is :func:`bayes_gmm.model.build_model`. A subclass may return any
        model that keeps the variables ``weights`` (component), ``means`` (component,
        feature), ``covariances`` and ``precisions_cholesky`` (component, feature,
        feature_) and has one observed variable: the EM start, relabelling (every
        variable with a ``component`` dimension is permuted), diagnostics, predictions,
        :meth:`save` and :meth:`load` then work as for the default model. The
        building blocks of the default model are public in :mod:`bayes_gmm.model`.

        Parameters
        ----------
        X : ndarray or DataFrame of shape (n_samples, n_features)
            The validated float data; a DataFrame (its columns name the features) when
            ``fit`` was given one.
        n_components : int
        covariance_type : str
        prior : ResolvedPrior
            The prior the EM start was fitted under, resolved on ``X``.
        sample_weight : ndarray of shape (n_samples,)

        Returns
        -------
        pymc.Model
        """
        names = _feature_names(X)
        return build_model(
            np.asarray(X, dtype=float),
            n_components,
            covariance_type,
            prior,
            sample_weight,
            ordered=self.relabel == "ordered",
            feature_names=names,
        )

    # --------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None):
        """Sample the posterior for data ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples,)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: the log-likelihood of sample i is multiplied by
            ``sample_weight[i]`` (integer weights equal repeated rows).

        Returns
        -------
        self

        Warns
        -----
        SamplingWarning
            One per failed convergence check (r_hat, ESS, divergences, E-BFMI,
            relabelling), naming the parameters and what to try.
        """
        self._check_params()
        feature_names = _feature_names(X)
        X = self._validated(X, min_samples=2)
        w = check_sample_weight(sample_weight, X.shape[0])
        try:
            fitted = self._fit(X, w, feature_names)
        except BaseException:
            self._forget()
            raise
        self._forget()
        for name, value in fitted.items():
            setattr(self, name, value)
        # fit -> warn_if_untrustworthy -> warn: point at the caller of fit.
        warn_if_untrustworthy(self.diagnostics_, stacklevel=3)
        return self

    def _validated(self, X, min_samples=1):
        X = check_data(X, min_samples=min_samples, allow_nan=self.missing == "em")
        X = X.astype(np.float64, copy=False)
        if self.missing == "em" and np.isnan(X).any():
            check_missing_rows(X)
        return X

    def _forget(self):
        for name in _FITTED:
            self.__dict__.pop(name, None)

    def _fit(self, X, w, feature_names):
        """Every fitted attribute, computed without touching ``self``'s state."""
        timings = {}
        t_start = time.perf_counter()
        n_samples, n_features = X.shape
        prior = self.prior if self.prior is not None else GaussianMixturePrior()
        rs = check_random_state(self.random_state)
        em_seed, sample_seed, jitter_seed = (int(s) for s in rs.randint(0, 2**31 - 1, size=3))

        t = time.perf_counter()
        em, selection = self._fit_em(X, w, prior, em_seed, feature_names)
        timings["em"] = time.perf_counter() - t
        K, ctype = int(em.n_components), em.covariance_type
        resolved = em.prior_  # the EM fit resolved the same prior on the same data

        t = time.perf_counter()
        X_model = X if feature_names is None else _frame(X, feature_names)
        model = self.build_model(X_model, K, ctype, resolved, w)
        _check_model(model)
        em_start = em_values(em, model, resolved, X, w)
        scale = start_scales(model, em, em_start, w.sum())
        start = chain_starts(
            model, em_start, scale, self.chains, float(self.init_jitter), jitter_seed
        )
        timings["build"] = time.perf_counter() - t

        # The pointwise log-likelihood comes out of the compiled sampler, up to a size.
        pointwise = int(self.draws) * int(self.chains) * n_samples <= LOG_LIKELIHOOD_LIMIT
        posterior, stats, sample_times, log_likelihood = sample_nuts(
            model,
            start,
            draws=int(self.draws),
            tune=int(self.tune),
            chains=int(self.chains),
            target_accept=float(self.target_accept),
            mass_matrix=choose_metric(self.mass_matrix, em.weights_, w.sum()),
            random_seed=sample_seed,
            progressbar=bool(self.progressbar),
            parallel=(self.cores or os.cpu_count() or 1) > 1,
            scale=scale,
            log_likelihood=pointwise,
        )
        n_gradients = sample_times.pop("gradients")
        timings.update(sample_times)

        t = time.perf_counter()
        dims = {name: tuple(model.named_vars_to_dims.get(name, ())) for name in posterior}
        relabelled = np.zeros(int(self.chains), dtype=int)
        if self.relabel == "pivot" and K > 1:
            full = full_covariances(em.covariances_, ctype, K, n_features)
            pivot_prec_chol = precision_cholesky(full, "full")[0]
            posterior, relabelled = relabel_posterior(posterior, dims, em.means_, pivot_prec_chol)
        timings["relabel"] = time.perf_counter() - t

        t = time.perf_counter()
        posterior_ds = model_dataset(posterior, model)
        stats_ds = model_dataset(stats, model)
        # Log-density gradients over the whole run, warm-up included: the cost of the
        # posterior independent of the machine's speed or load.
        stats_ds.attrs["n_gradients"] = n_gradients
        # The mixture's parameters and whatever a user's model adds; not the structure's
        # internal variables (Bartlett factors, precisions), which restate the covariances.
        checked = [v for v in posterior_ds.data_vars if v not in _INTERNAL]
        report = compute_diagnostics(posterior_ds[checked], stats_ds, relabelled)
        timings["diagnostics"] = time.perf_counter() - t

        t = time.perf_counter()
        fitted = {
            "model_": model,
            "start_": em_start,
            "em_": em,
            "prior_": resolved,
            "selection_": selection,
            "n_components_": K,
            "covariance_type_": ctype,
            "n_features_in_": n_features,
            "diagnostics_": report,
            "timings_": timings,
        }
        if feature_names is not None:
            fitted["feature_names_in_"] = np.asarray(feature_names, dtype=object)
        config = self._config(prior, K, ctype, n_features, feature_names, relabelled, timings)
        tree = build_tree(posterior_ds, stats_ds, model, em, config)
        draws = posterior_draws(tree)
        if log_likelihood:  # empty when not asked for (above the size limit)
            tree["log_likelihood"] = pointwise_dataset(log_likelihood, tree)
        fitted["idata_"] = tree
        fitted["_posterior_draws"] = draws
        timings["output"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        # Stored only now: config["timings"] is ``timings``, complete from here on.
        tree.attrs["bayes_gmm"] = json.dumps(config)
        return fitted

    def _fit_em(self, X, w, prior, seed, feature_names):
        from bayes_gmm.em import GaussianMixture

        X_em = X if feature_names is None else _frame(X, feature_names)
        weighted = None if np.all(w == 1.0) else w
        if self.n_components is None:
            from bayes_gmm.selection import select_model

            if self.covariance_type is None:
                # Every model the grid can fit under the prior (mclust's with a conjugate
                # prior), so that the fit can say when the overall winner has no posterior.
                ctypes = _grid_structures(X.shape[1])
            else:
                ctypes = (self.covariance_type,)
            n_max = min(9, X.shape[0])
            selection = select_model(
                X_em,
                n_components=range(1, n_max + 1),
                covariance_types=ctypes,
                prior=prior,
                random_state=seed,
                sample_weight=weighted,
                missing=self.missing,
            )
            return selection.estimators[_posterior_choice(selection)], selection
        K = check_n_components(self.n_components, X.shape[0])
        em = GaussianMixture(
            K,
            covariance_type=self.covariance_type or "full",
            n_init=self.n_init,
            prior=prior,
            random_state=seed,
            max_iter=500,
            tol=1e-6,
            missing=self.missing,
        )
        em.fit(X_em, sample_weight=weighted)
        return em, None

    def _config(self, prior, K, ctype, n_features, feature_names, relabelled, timings):
        params = self.get_params(deep=False)
        params["prior"] = None if self.prior is None else self.prior.to_dict()
        if params["random_state"] is not None and not isinstance(
            params["random_state"], numbers.Integral
        ):
            params["random_state"] = None  # a generator object cannot be saved
        return {
            "format_version": FORMAT_VERSION,
            "params": params,
            "prior": prior.to_dict(),
            "n_components": K,
            "n_features": n_features,
            "covariance_type": ctype,
            "ordered": self.relabel == "ordered",
            "feature_names": None if feature_names is None else [str(f) for f in feature_names],
            "relabelled": [int(r) for r in relabelled],
            "timings": timings,
        }

    # ------------------------------------------------------------- posterior

    def _draws(self):
        check_is_fitted(self, "idata_")
        return self._posterior_draws

    def posterior_parameters(self, full=False):
        """All posterior draws, chains stacked.

        Parameters
        ----------
        full : bool, default=False
            Return covariances as (S, K, d, d) matrices whatever the covariance type.

        Returns
        -------
        weights : ndarray of shape (S, K)
        means : ndarray of shape (S, K, d)
        covariances : ndarray
            (S, K, d, d) when ``full``; else the type's shape with a leading S.
        """
        draws = self._draws()
        cov = np.asarray(self.idata_["posterior"]["covariances"])
        cov = cov.reshape(draws.n_draws, *cov.shape[2:])
        if full:
            cov = full_covariances(
                cov, self.covariance_type_, self.n_components_, self.n_features_in_
            )
        return draws.weights, draws.means, cov

    def _check_X(self, X):
        check_is_fitted(self, "idata_")
        X = self._validated(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but this model was fitted with "
                f"{self.n_features_in_}. Pass the same columns as in fit."
            )
        return X

    def predict_proba(self, X):
        """Posterior mean of each point's membership probabilities.

        ``p(z_n = k | x_n, theta)`` is computed exactly for each draw and averaged over
        the draws, in chunks of rows and draws.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        return self._draws().predict_proba(self._check_X(X))

    def predict(self, X):
        """Most probable component of each point under the posterior-averaged membership.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return np.argmax(self.predict_proba(X), axis=1)

    def membership(self, X, prob=0.9):
        """Posterior mean and equal-tailed credible interval of every membership probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        prob : float, default=0.9
            Mass of the interval, in (0, 1).

        Returns
        -------
        xarray.Dataset
            Variables ``mean``, ``lower``, ``upper`` with dims (obs, component).
        """
        import xarray as xr

        check_probability(prob, "prob")
        mean, lower, upper = self._draws().membership(self._check_X(X), prob)
        dims = (OBS, COMPONENT)
        return xr.Dataset(
            {"mean": (dims, mean), "lower": (dims, lower), "upper": (dims, upper)},
            coords={COMPONENT: np.arange(self.n_components_)},
            attrs={"prob": float(prob)},
        )

    def most_likely_component(self, X, prob=0.9, membership=None):
        """Each point's most probable component, with that membership's mean and interval.

        The component is the one with the largest posterior mean membership probability
        (as in :meth:`predict`); ``probability`` is that posterior mean and ``lower``,
        ``upper`` bound the equal-tailed credible interval of the same probability.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        prob : float, default=0.9
            Mass of the interval, in (0, 1).
        membership : xarray.Dataset, optional
            ``self.membership(X, prob)`` if already computed, so it is not computed again;
            it must hold intervals of mass ``prob``.

        Returns
        -------
        pandas.DataFrame of shape (n_samples, 4)
            Columns ``component`` (int), ``probability``, ``lower`` and ``upper``; indexed
            like ``X`` if it is a DataFrame, else by a RangeIndex. ``attrs["prob"]`` holds
            ``prob``.
        """
        import pandas as pd

        prob = check_probability(prob, "prob")
        index = X.index if isinstance(X, pd.DataFrame) else None
        if membership is None:
            membership = self.membership(X, prob=prob)
        else:
            held = membership.attrs.get("prob", prob)
            if held != prob:
                raise ValueError(
                    f"membership holds {held:.0%} intervals, not {prob:.0%}: pass "
                    f"prob={held} or membership=None to compute the {prob:.0%} intervals."
                )
            n_rows = self._check_X(X).shape[0]
            shape = membership["mean"].shape
            if shape != (n_rows, self.n_components_):
                raise ValueError(
                    f"membership has shape {shape}, but X has {n_rows} rows and the model "
                    f"{self.n_components_} components. Pass membership(X, prob) of this X."
                )
        mean, lower, upper = (membership[v].to_numpy() for v in ("mean", "lower", "upper"))
        best = np.argmax(mean, axis=1)
        rows = np.arange(len(best))
        out = pd.DataFrame(
            {
                "component": best,
                "probability": mean[rows, best],
                "lower": lower[rows, best],
                "upper": upper[rows, best],
            },
            index=index,
        )
        out.attrs["prob"] = prob
        return out

    def score_samples(self, X):
        """Log posterior predictive density ``log mean_s p(x | theta_s)`` of each point.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        return self._draws().score_samples(self._check_X(X))

    def score(self, X, y=None):
        """Mean log posterior predictive density of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def sample_posterior_predictive(self, n_draws=None, random_state=None, **kwargs):
        """Replicated data sets from ``model_``, one per posterior draw
        (:func:`pymc.sample_posterior_predictive`).

        Parameters
        ----------
        n_draws : int, default=None
            Use this many posterior draws per chain, evenly spaced; default: all, or
            fewer so the result stays under about 5e7 numbers.
        random_state : int, Generator or None
        **kwargs
            Passed to :func:`pymc.sample_posterior_predictive`.

        Returns
        -------
        xarray.Dataset
            ``X`` with dims (chain, draw, obs, feature). Also stored in
            ``idata_["posterior_predictive"]``. With ``missing="em"`` the replicated rows
            are complete: the model describes the values, not which of them go missing
            (missing at random). Compare them with the data on the observed entries
            (``~np.isnan(X)``), or mask them the same way.
        """
        import pymc as pm

        check_is_fitted(self, "idata_")
        post = self.idata_["posterior"]
        C, D = post.sizes["chain"], post.sizes["draw"]
        n, d = self.idata_["observed_data"][self.model_.observed_RVs[0].name].shape
        if n_draws is None:
            n_draws = int(max(1, min(D, 5e7 // (C * n * d))))
        n_draws = min(check_int(n_draws, "n_draws", 1), D)
        idx = np.unique(np.linspace(0, D - 1, n_draws).round().astype(int))
        import xarray as xr

        # With the data groups beside the draws, PyMC sees that no data changed since fit.
        groups = {"posterior": post.to_dataset().isel(draw=idx)}
        for group in ("observed_data", "constant_data"):
            if group in self.idata_.children:
                groups[group] = self.idata_[group].to_dataset()
        thinned = xr.DataTree.from_dict(groups)
        kwargs.setdefault("progressbar", False)
        result = pm.sample_posterior_predictive(
            thinned, model=self.model_, random_seed=random_state, **kwargs
        )
        ds = result["posterior_predictive"].to_dataset()
        self.idata_["posterior_predictive"] = ds
        return ds

    def loo(self, pointwise=None, chunk_rows=None, **kwargs):
        """PSIS-LOO of the training data (``arviz_stats.loo``).

        Each row's leave-one-out term depends on that row's log-likelihood over the draws
        alone. So when the pointwise log-likelihood (rows x draws) is too large to hold
        (``fit`` stores it only up to :data:`LOG_LIKELIHOOD_LIMIT` entries), it is
        computed and smoothed ``chunk_rows`` rows at a time and the terms are added up:
        the same estimate, in bounded memory (without the smoothed importance weights,
        which would be as large as what is avoided).

        Parameters
        ----------
        pointwise : bool, default=None
            Also return each row's ``elpd_i`` and ``pareto_k`` (``None``: ArviZ's
            ``rcParams["stats.ic_pointwise"]``).
        chunk_rows : int, default=None
            Work through the rows this many at a time (by default only when the
            pointwise log-likelihood is not stored and would exceed
            :data:`LOG_LIKELIHOOD_LIMIT` entries, then as many rows as fit in it).
        **kwargs
            Passed to ``arviz_stats.loo``.

        Returns
        -------
        ELPDDataLOO
        """
        import arviz_stats as az

        check_is_fitted(self, "idata_")
        tree = self.idata_
        name = self.model_.observed_RVs[0].name
        if chunk_rows is None and "log_likelihood" in tree.children:
            return az.loo(tree, var_name=name, pointwise=pointwise, **kwargs)
        X, w = observed_rows(tree, name)
        draws = self._draws()
        if chunk_rows is None and draws.n_draws * X.shape[0] <= LOG_LIKELIHOOD_LIMIT:
            tree["log_likelihood"] = log_likelihood_dataset(draws, tree, X, w, name)
            return az.loo(tree, var_name=name, pointwise=pointwise, **kwargs)
        if chunk_rows is None:
            chunk_rows = max(int(LOG_LIKELIHOOD_LIMIT // draws.n_draws), 1)
        if pointwise is None:
            from arviz_base import rcParams

            pointwise = rcParams["stats.ic_pointwise"]
        check_scalar(chunk_rows, "chunk_rows", numbers.Integral, min_val=1)
        return chunked_loo(draws, tree, X, w, name, int(chunk_rows), pointwise, kwargs)

    def summary(self, ci_prob=0.94, **kwargs):
        """ArviZ summary (mean, sd, interval, ESS, r_hat) of weights, means and covariances.

        Each covariance entry appears once (diagonal and upper triangle), and numbers are
        rounded from their sd (``round_to="none"`` keeps them raw).

        Returns
        -------
        pandas.DataFrame
        """
        from bayes_gmm._display import posterior_summary

        check_is_fitted(self, "idata_")
        post = self.idata_["posterior"].to_dataset()[["weights", "means", "covariances"]]
        return posterior_summary(post, ci_prob=ci_prob, **kwargs)

    def diagnostics(self):
        """Convergence report: max r_hat, min bulk/tail ESS, divergences, E-BFMI,
        relabelled draws per chain, and a verdict.

        Returns
        -------
        DiagnosticsReport
        """
        check_is_fitted(self, "diagnostics_")
        return self.diagnostics_

    # --------------------------------------------------------------- display

    def _summary_header(self):
        post = self.idata_["posterior"]
        return (
            f"BayesianGaussianMixture: {self.n_components_} component(s), covariance_type="
            f"{self.covariance_type_!r}, {post.sizes['chain']} chains x "
            f"{post.sizes['draw']} draws; diagnostics {self.diagnostics_.verdict}"
        )

    def _display_table(self):
        table = self.summary()
        keep = [name for name in table.index if not name.startswith("covariances")]
        return table.loc[keep]

    def __repr__(self, N_CHAR_MAX=700):
        text = super().__repr__(N_CHAR_MAX)
        if hasattr(self, "idata_"):
            text += "\n" + self._summary_header() + "\n" + self._display_table().to_string()
        return text

    def _repr_html_(self):
        if not hasattr(self, "idata_"):
            return super()._repr_html_inner()
        return f"<p><b>{self._summary_header()}</b></p>" + self._display_table().to_html()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs)
        if hasattr(self, "idata_"):
            bundle["text/html"] = self._repr_html_()
        return bundle

    # ------------------------------------------------------------------- I/O

    def save(self, path):
        """Write the fitted model to ``path`` (zarr directory, or netCDF if it ends in .nc).

        The write goes to a temporary sibling first and is renamed into place, so a
        failed save never leaves a half-written file at ``path``.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        Path
        """
        import dataclasses

        check_is_fitted(self, "idata_")
        config = dict(json.loads(self.idata_.attrs["bayes_gmm"]))
        # Every field of the report, so that load rebuilds it with DiagnosticsReport(**...).
        report = self.diagnostics_
        config["diagnostics"] = {
            f.name: _to_json(getattr(report, f.name)) for f in dataclasses.fields(report)
        }
        return write_tree(self.idata_, config, path)

    @classmethod
    def load(cls, path):
        """Rebuild a fitted model written by :meth:`save`, its PyMC model included.

        ``load`` of a subclass calls that subclass's :meth:`build_model`.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        BayesianGaussianMixture
        """
        from bayes_gmm.diagnostics import DiagnosticsReport
        from bayes_gmm.em import GaussianMixture

        tree, config = read_tree(path)
        params = dict(config["params"])
        if params["prior"] is not None:
            params["prior"] = GaussianMixturePrior.from_dict(params["prior"])
        prior = GaussianMixturePrior.from_dict(config["prior"])
        model = cls(**params)
        K, d, ctype = config["n_components"], config["n_features"], config["covariance_type"]
        X, w = observed_rows(tree, next(iter(tree["observed_data"].data_vars)))
        em_ds = tree["em_estimate"]
        em = GaussianMixture(K, covariance_type=ctype, prior=prior, missing=model.missing)
        em.weights_ = np.asarray(em_ds["weights"])
        em.means_ = np.asarray(em_ds["means"])
        em.covariances_ = np.asarray(em_ds["covariances"])
        em.n_features_in_ = d
        # As in fit: a prior's data-scaled defaults from the column-mean-imputed data.
        X_full = impute_column_means(X, w) if np.isnan(X).any() else X
        resolved = prior.resolve(X_full, K, ctype, sample_weight=w)
        em.prior_ = resolved
        names = config["feature_names"]
        pm_model = model.build_model(
            X if names is None else _frame(X, names), K, ctype, resolved, w
        )
        diag = dict(config.pop("diagnostics"))
        diag["bfmi"] = np.asarray(diag["bfmi"], dtype=float)
        diag["relabelled"] = np.asarray(diag["relabelled"], dtype=int)
        tree.attrs = {"bayes_gmm": json.dumps(config)}
        fitted = {
            "model_": pm_model,
            "start_": em_values(em, pm_model, resolved, X, w),
            "em_": em,
            "prior_": resolved,
            "selection_": None,
            "n_components_": K,
            "covariance_type_": ctype,
            "n_features_in_": d,
            "diagnostics_": DiagnosticsReport(**diag),
            "timings_": config["timings"],
            "idata_": tree,
            "_posterior_draws": posterior_draws(tree),
        }
        if names is not None:
            fitted["feature_names_in_"] = np.asarray(names, dtype=object)
        for name, value in fitted.items():
            setattr(model, name, value)
        return model


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


def _grid_structures(n_features):
    """The structures ``n_components=None`` compares: select_model's default grid, less the
    models without a conjugate prior (the grid runs under the prior), under scikit-learn's
    names where they have one."""
    from bayes_gmm.selection import default_covariance_types

    types = [get_structure(t) for t in default_covariance_types(n_features)]
    return tuple(dict.fromkeys(canonical_name(t) for t in types if t.has_map))


def _posterior_choice(selection):
    """The grid's best cell whose posterior can be sampled; a warning when it is not the
    grid's overall winner (which then has a structure without a posterior)."""
    choice = selection.best_posterior_params()
    if choice is None:
        raise ValueError(
            "No cell of the selection grid with a structure the posterior supports could be "
            "fitted; bayes_gmm.select_model(X) shows each cell's reason. Check the data, or "
            "pass n_components and covariance_type."
        )
    best, criterion = selection.best_params, selection.criterion
    table = selection.table.set_index(["covariance_type", "n_components"])[criterion]
    if choice != best and table[choice] > table[best]:
        name, K = best
        closest = canonical_name(get_structure(name).closest_posterior_structure())
        warnings.warn(
            f"The grid's best model by {criterion.upper()} is {name} with K = {K} "
            f"({criterion.upper()} {table[best]:.2f}), whose posterior is not supported (the "
            f"closest supported structure is {closest}); sampling the best supported model "
            f"instead: {choice[0]} with K = {choice[1]} ({criterion.upper()} "
            f"{table[choice]:.2f}, {table[choice] - table[best]:+.2f}). selection_ has the "
            "whole grid; pass covariance_type to choose the structure yourself.",
            UserWarning,
            stacklevel=5,  # fit -> _fit -> _fit_em -> here
        )
    return choice


def _to_json(value):
    """A report field as JSON can hold it (arrays as lists)."""
    return value.tolist() if isinstance(value, np.ndarray) else value


def _feature_names(X):
    columns = getattr(X, "columns", None)
    if columns is None:
        return None
    return [str(c) for c in columns]


def _frame(X, names):
    import pandas as pd

    return pd.DataFrame(X, columns=names)


def _check_model(model):
    """A model from build_model keeps what the rest of the pipeline reads."""
    missing = [name for name in _REQUIRED if name not in model.named_vars]
    if missing:
        raise ValueError(
            f"The model from build_model lacks {', '.join(missing)}: keep the variables "
            f"{', '.join(_REQUIRED)} (see bayes_gmm.model.build_model) when extending it."
        )
    if len(model.observed_RVs) != 1:
        raise ValueError(
            f"The model from build_model has {len(model.observed_RVs)} observed variables; "
            "it needs exactly one, the mixture density of X (labels summed out)."
        )
    dims = model.named_vars_to_dims
    for name in ("weights", "means", "precisions_cholesky"):
        if COMPONENT not in (dims.get(name) or ()):
            raise ValueError(
                f"The model's {name!r} needs a {COMPONENT!r} dimension (the relabelling "
                "permutes every variable along it)."
            )
