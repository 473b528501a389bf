"""``BayesianGaussianMixture``: an EM-initialized NUTS posterior of a Gaussian mixture.

Stage 4 of the Bayesian pipeline: EM/MAP fit (:mod:`bayes_gmm.em`) -> PyMC model
(:mod:`bayes_gmm.model`) -> NUTS (nutpie) -> relabelling (:mod:`bayes_gmm.relabel`)
-> diagnostics (:mod:`bayes_gmm.diagnostics`). Everything the fitted estimator
knows is in ``idata_``, so :meth:`BayesianGaussianMixture.save` and
:meth:`BayesianGaussianMixture.load` need nothing else (no pickle).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import numbers
import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, DensityMixin
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from bayes_gmm._gaussian import full_covariances, normalize
from bayes_gmm._validation import (
    check_data,
    check_int,
    check_n_components,
    check_probability,
    check_real,
    check_sample_weight,
)
from bayes_gmm.diagnostics import SamplingWarning, compute_diagnostics, warn_if_untrustworthy
from bayes_gmm.model import (
    ModelStructure,
    component_log_density,
    covariances_from_prec_chol,
    flatten,
    free_variables,
    get_compiled,
    model_data,
    params_from_draws,
    to_unconstrained,
)
from bayes_gmm.priors import COVARIANCE_TYPES, GaussianMixturePrior, _check_covariance_type
from bayes_gmm.relabel import apply_permutations, kl_cost, pivot_permutations

__all__ = ["BayesianGaussianMixture", "SamplingWarning"]

_RELABEL = ("pivot", "ordered", None)
_FORMAT_VERSION = 1
# Budget for one temporary block of floats in the chunked computations (~32 MB).
_BLOCK = 4_000_000


class BayesianGaussianMixture(DensityMixin, BaseEstimator):
    """Posterior of a Gaussian mixture by NUTS, started at the EM/MAP estimate.

    ``fit`` runs EM (with restarts) under ``prior`` to find the posterior mode,
    builds a PyMC model of the same mixture with the component labels summed
    out, samples it with nutpie's NUTS with every chain started next to the EM
    estimate, relabels the draws to the EM estimate, and checks convergence.

    The model (``K`` components, ``d`` features; hyperparameters from
    ``prior.resolve(X, K, covariance_type)``, defaults as mclust's
    ``priorControl``)::

        weights          ~ Dirichlet(alpha * ones(K))
        full:  Sigma_k   ~ InvWishart(nu, Lambda)       k = 1..K
        tied:  Sigma     ~ InvWishart(nu, Lambda)       (shared)
        diag:  s2_kj     ~ InvGamma(nu / 2, lambda_j / 2)
        spherical: s2_k  ~ InvGamma(nu / 2, lambda / 2)
        mu_k | Sigma_k   ~ Normal(m0, Sigma_k / kappa)
        x_n              ~ sum_k weights_k Normal(mu_k, Sigma_k)

    This is exactly the prior whose mode the EM engine finds for MAP, so the
    EM estimate is the posterior mode of this model. NUTS runs on the
    unconstrained scale: softmax log-ratios for the weights, the means, and the
    log-diagonal and off-diagonal of the precision Cholesky factor (full, tied)
    or log precisions (diag, spherical); see :mod:`bayes_gmm.model`.

    Parameters
    ----------
    n_components : int or None, default=None
        Number of components K. ``None``: choose K (and, unless
        ``covariance_type`` is given, the covariance structure) by BIC with
        :func:`bayes_gmm.select_model` over K = 1..9 under the same prior.
    covariance_type : {"full", "tied", "diag", "spherical"} or None, default=None
        ``None`` means "full" when ``n_components`` is an int, and "chosen by the
        selection grid" when it is ``None``.
    prior : GaussianMixturePrior or None, default=None
        The prior for both the EM/MAP start and the posterior. ``None``:
        ``GaussianMixturePrior()`` (weakly informative, scaled to the data).
    draws : int, default=1000
        Posterior draws per chain, after tuning.
    tune : int, default=1000
        Tuning (warm-up) steps per chain; they are discarded. ``0`` runs one
        step (nutpie needs at least one).
    chains : int, default=4
    target_accept : float, default=0.8
        NUTS' target acceptance rate, in (0, 1). Raise it (0.95, 0.99) when
        there are divergences.
    random_state : int, RandomState instance or None, default=None
        Seeds the EM restarts, the start jitter and the sampler: a fixed value
        gives identical draws.
    relabel : {"pivot", "ordered"} or None, default="pivot"
        "pivot": permute each draw's components to best match the EM estimate
        (Kullback-Leibler cost, Hungarian assignment). "ordered": constrain the
        first coordinate of the means to increase with the component index
        (no relabelling needed; only sensible when that coordinate separates
        the components). ``None``: keep the draws as sampled.
    progressbar : bool, default=False
        Show nutpie's progress bar.
    n_init : int, default=5
        EM restarts for the starting point.
    init_jitter : float, default=1.0
        Half-width of the uniform jitter added to each chain's start, in units
        of the approximate posterior standard deviation of each unconstrained
        parameter (``1 / sqrt(n_k)`` scaled). ``0`` starts all chains exactly
        at the EM estimate.
    cores : int or None, default=None
        Chains run in parallel on this many cores (default: all, at most
        ``chains``); BLAS is limited to one thread meanwhile.
    backend : {"numpy", "pymc"}, default="numpy"
        How NUTS evaluates the log density and its gradient. "numpy": a
        closed-form gradient (:func:`bayes_gmm.model.logp_and_grad`), nothing to
        compile. "pymc": the PyMC model :func:`bayes_gmm.model.build_model`
        compiled by nutpie with numba (identical density, checked in the tests;
        compiling a new structure took 94 s with empty caches and 15 s with warm
        ones in ``benchmarks/bench_nuts.py --backend pymc`` on 2 cores).

    Attributes
    ----------
    idata_ : xarray.DataTree
        Groups ``posterior`` (``weights`` (chain, draw, component), ``means``
        (..., component, feature), ``covariances`` (by type: (..., component,
        feature, feature_) full, (..., feature, feature_) tied, (...,
        component, feature) diag, (..., component) spherical)), ``sample_stats``,
        ``observed_data``, ``log_likelihood`` (pointwise, when it fits in
        memory), ``em_estimate``; the configuration is in ``attrs``.
    em_ : GaussianMixture
        The EM/MAP fit the chains started from (also the relabelling pivot).
    n_components_ : int
    covariance_type_ : str
    selection_ : ModelSelection or None
        The grid result when ``n_components`` was ``None``.
    diagnostics_ : DiagnosticsReport
    timings_ : dict
        Seconds spent in each stage of the last ``fit`` ("em", "build", "compile",
        "sample", "relabel", "diagnostics", "output": the data tree and the pointwise
        log-likelihood) and in all of it ("total").
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
        random_state=None,
        relabel="pivot",
        progressbar=False,
        n_init=5,
        init_jitter=1.0,
        cores=None,
        backend="numpy",
    ):
        self.n_components = n_components
        self.covariance_type = covariance_type
        self.prior = prior
        self.draws = draws
        self.tune = tune
        self.chains = chains
        self.target_accept = target_accept
        self.random_state = random_state
        self.relabel = relabel
        self.progressbar = progressbar
        self.n_init = n_init
        self.init_jitter = init_jitter
        self.cores = cores
        self.backend = backend

    # ------------------------------------------------------------------ checks

    def _check_params(self):
        check_int(self.draws, "draws", 1)
        check_int(self.tune, "tune", 0)
        check_int(self.chains, "chains", 1)
        check_int(self.n_init, "n_init", 1)
        if self.cores is not None:
            check_int(self.cores, "cores", 1)
        check_probability(
            self.target_accept, "target_accept", " (e.g. 0.8, or 0.95 against divergences)"
        )
        check_real(self.init_jitter, "init_jitter", 0.0)
        if self.backend not in ("numpy", "pymc"):
            raise ValueError(f"backend must be 'numpy' or 'pymc', got {self.backend!r}.")
        if self.relabel not in _RELABEL:
            raise ValueError(f"relabel must be one of {_RELABEL}, got {self.relabel!r}.")
        if self.covariance_type is not None:
            _check_covariance_type(self.covariance_type)
        if self.prior is not None and not isinstance(self.prior, GaussianMixturePrior):
            raise TypeError(
                "prior must be a bayes_gmm.GaussianMixturePrior or None, got "
                f"{type(self.prior).__name__}."
            )

    # --------------------------------------------------------------------- fit

    def fit(self, X, y=None, sample_weight=None):
        """Sample the posterior for data ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or (n_samples,)
        y : ignored
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights: the log-likelihood of sample i is multiplied
            by ``sample_weight[i]`` (integer weights equal repeated rows).

        Returns
        -------
        self

        Warns
        -----
        SamplingWarning
            One per failed convergence check (r_hat, ESS, divergences, E-BFMI,
            relabelling), naming the parameters and what to try.
        """
        return self._fit(X, sample_weight)

    def _fit(self, X, sample_weight, chain_permutations=None):
        """``fit``; ``chain_permutations`` (tests only) starts chain c in a permuted mode."""
        self._check_params()
        timings = {}
        t_start = time.perf_counter()
        feature_names = _feature_names(X)
        X = check_data(X, min_samples=2).astype(np.float64, copy=False)
        n_samples, n_features = X.shape
        w = check_sample_weight(sample_weight, n_samples)
        prior = self.prior if self.prior is not None else GaussianMixturePrior()
        rs = check_random_state(self.random_state)
        em_seed, sample_seed, jitter_seed = (int(s) for s in rs.randint(0, 2**31 - 1, size=3))

        t = time.perf_counter()
        em, selection = self._fit_em(X, w, prior, em_seed, feature_names)
        timings["em"] = time.perf_counter() - t
        K, ctype = int(em.n_components), em.covariance_type
        self.selection_ = selection
        structure = ModelStructure(K, n_features, ctype, self.relabel == "ordered")
        resolved = em.prior_  # the EM fit resolved the same prior on the same data

        compiled, compile_times = get_compiled(structure, self.backend, model_data(X, w, resolved))
        timings.update(compile_times)
        em_weights, em_means, em_cov = em.weights_, em.means_, em.covariances_
        # The EM estimate on the unconstrained scale: the chains' start, the relabelling
        # pivot's precision factors and the jitter scale of the off-diagonals.
        em_values = to_unconstrained(structure, em_weights, em_means, em_cov)
        start = flatten(structure, em_values)
        scale = _jitter_scale(structure, em_values, em_weights, em_cov, w.sum())
        starts = None
        if chain_permutations is not None:
            starts = [
                flatten(
                    structure,
                    to_unconstrained(
                        structure, em_weights[p], em_means[p], _permute_cov(em_cov, p, ctype)
                    ),
                )
                for p in chain_permutations
            ]

        t = time.perf_counter()
        trace = self._sample(compiled, start, scale, starts, sample_seed, jitter_seed)
        timings["sample"] = time.perf_counter() - t

        t = time.perf_counter()
        raw = {n: np.asarray(trace["posterior"][n]) for n, _ in free_variables(structure)}
        weights, means, prec_chol = params_from_draws(structure, raw)
        C, S = weights.shape[:2]
        em_prec_chol = params_from_draws(structure, {k: v[None] for k, v in em_values.items()})
        em_prec_chol = em_prec_chol[2][0]
        relabelled = np.zeros(C, dtype=int)
        if self.relabel == "pivot" and K > 1:
            covs_full = covariances_from_prec_chol(prec_chol, "full").reshape(
                C * S, K, n_features, n_features
            )
            cost = kl_cost(means.reshape(C * S, K, n_features), covs_full, em_means, em_prec_chol)
            perm = pivot_permutations(cost)
            moved = np.any(perm != np.arange(K), axis=1).reshape(C, S)
            relabelled = moved.sum(axis=1)
            weights = apply_permutations(weights.reshape(C * S, K), perm, 1).reshape(C, S, K)
            means = apply_permutations(means.reshape(C * S, K, -1), perm, 1).reshape(means.shape)
            prec_chol = apply_permutations(
                prec_chol.reshape(C * S, K, n_features, n_features), perm, 1
            ).reshape(prec_chol.shape)
        covariances = covariances_from_prec_chol(prec_chol, ctype)
        timings["relabel"] = time.perf_counter() - t

        t = time.perf_counter()
        self.n_components_, self.covariance_type_ = K, ctype
        self.n_features_in_ = n_features
        if feature_names is not None:
            self.feature_names_in_ = np.asarray(feature_names, dtype=object)
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        self.em_ = em
        self.prior_ = resolved
        posterior = _posterior_dataset(weights, means, covariances, ctype, feature_names)
        stats = trace["sample_stats"].to_dataset()
        stats = stats[[v for v in stats.data_vars if stats[v].dtype != object]]
        self.diagnostics_ = compute_diagnostics(posterior, stats, relabelled)
        timings["diagnostics"] = time.perf_counter() - t

        t = time.perf_counter()
        config = self._config(prior, structure, feature_names, relabelled, timings)
        self.idata_ = _build_tree(posterior, stats, X, w, em, config, feature_names)
        self._draw_cache = None
        n_total = C * S * n_samples
        if n_total <= 2.5e7:
            self.idata_["log_likelihood"] = self._log_likelihood_dataset(X)
        timings["output"] = time.perf_counter() - t
        timings["total"] = time.perf_counter() - t_start
        self.timings_ = timings
        # Stored only now: config["timings"] is ``timings``, complete from here on.
        self.idata_.attrs["bayes_gmm"] = json.dumps(config)
        # fit -> _fit -> warn_if_untrustworthy -> warn: point at the caller of fit.
        warn_if_untrustworthy(self.diagnostics_, stacklevel=4)
        return self

    def _fit_em(self, X, w, prior, seed, feature_names):
        from bayes_gmm.em import GaussianMixture

        X_em = X if feature_names is None else _frame(X, feature_names)
        weighted = None if np.all(w == 1.0) else w
        if self.n_components is None:
            from bayes_gmm.selection import select_model

            ctypes = COVARIANCE_TYPES if self.covariance_type is None else (self.covariance_type,)
            n_max = min(9, X.shape[0])
            selection = select_model(
                X_em,
                n_components=range(1, n_max + 1),
                covariance_types=ctypes,
                prior=prior,
                random_state=seed,
                sample_weight=weighted,
            )
            return selection.best_estimator, selection
        K = check_n_components(self.n_components, X.shape[0])
        em = GaussianMixture(
            K,
            covariance_type=self.covariance_type or "full",
            n_init=self.n_init,
            prior=prior,
            random_state=seed,
            max_iter=500,
            tol=1e-6,
        )
        em.fit(X_em, sample_weight=weighted)
        return em, None

    def _sample(self, compiled, start, scale, starts, sample_seed, jitter_seed):
        import nutpie
        from threadpoolctl import threadpool_limits

        jitter = float(self.init_jitter)
        chain_of_seed = {}

        def initial_point(seed):
            # nutpie calls this once per chain with a per-chain seed derived from ours;
            # the chain's index (order of first call) picks its mode in tests.
            index = chain_of_seed.setdefault(seed, len(chain_of_seed))
            base = start if starts is None else starts[index % len(starts)]
            rng = np.random.default_rng([jitter_seed, int(seed) % 2**63])
            return base + jitter * scale * rng.uniform(-1.0, 1.0, size=base.shape)

        field = "initial_point_func"
        if not hasattr(compiled, field):
            field = "_make_initial_points"  # nutpie.from_pyfunc models
        compiled = dataclasses.replace(compiled, **{field: initial_point})
        cores = min(self.chains, self.cores or os.cpu_count() or 1)
        # Parallel chains and multi-threaded BLAS fight for the same cores.
        with threadpool_limits(1):
            return nutpie.sample(
                compiled,
                draws=self.draws,
                # nutpie needs at least one tuning step (as pm.sample does for tune=0).
                tune=max(int(self.tune), 1),
                chains=self.chains,
                cores=cores,
                seed=sample_seed,
                progress_bar=bool(self.progressbar),
                save_warmup=False,
                target_accept=float(self.target_accept),
            )

    def _config(self, prior, structure, feature_names, relabelled, timings):
        params = self.get_params(deep=False)
        params["prior"] = None if self.prior is None else self.prior.to_dict()
        if params["random_state"] is not None and not isinstance(
            params["random_state"], numbers.Integral
        ):
            params["random_state"] = None  # a generator object cannot be saved
        return {
            "format_version": _FORMAT_VERSION,
            "params": params,
            "prior": prior.to_dict(),
            "n_components": structure.n_components,
            "n_features": structure.n_features,
            "covariance_type": structure.covariance_type,
            "ordered": structure.ordered,
            "feature_names": None if feature_names is None else [str(f) for f in feature_names],
            "relabelled": [int(r) for r in relabelled],
            "timings": timings,
        }

    # ------------------------------------------------------------- posterior

    def _draws(self):
        """(weights, means, prec_chol, covariances) of all draws, chains stacked.

        Shapes (S, K), (S, K, d), (S, K, d, d) and (S, K, d, d) (full matrices whatever
        the covariance type); computed once and cached.
        """
        check_is_fitted(self, "idata_")
        if getattr(self, "_draw_cache", None) is None:
            post = self.idata_["posterior"]
            weights = np.asarray(post["weights"])
            S = weights.shape[0] * weights.shape[1]
            K, d = self.n_components_, self.n_features_in_
            weights = weights.reshape(S, K)
            means = np.asarray(post["means"]).reshape(S, K, d)
            cov = np.asarray(post["covariances"])
            cov = cov.reshape(S, *cov.shape[2:])
            covs = full_covariances(cov, self.covariance_type_, K, d)
            prec_chol = np.linalg.cholesky(np.linalg.inv(covs))
            self._draw_cache = (weights, means, prec_chol, covs)
        return self._draw_cache

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
        weights, means, _, covs = self._draws()
        if full:
            return weights, means, covs
        cov = np.asarray(self.idata_["posterior"]["covariances"])
        return weights, means, cov.reshape(weights.shape[0], *cov.shape[2:])

    def _check_X(self, X):
        check_is_fitted(self, "idata_")
        X = check_data(X).astype(np.float64, copy=False)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but this model was fitted with "
                f"{self.n_features_in_}. Pass the same columns as in fit."
            )
        return X

    def _chunks(self, n_rows, n_draws, all_draws=False):
        """Row and draw chunk sizes that keep one (draws, rows, K, d) block near _BLOCK."""
        K, d = self.n_components_, self.n_features_in_
        per_pair = K * max(d, 1)
        if all_draws:
            rows = max(1, _BLOCK // (n_draws * K))
            return rows, max(1, min(n_draws, _BLOCK // (rows * per_pair)))
        draws = max(1, min(n_draws, 256))
        rows = max(1, _BLOCK // (draws * per_pair))
        return min(rows, n_rows), draws

    def _iter_log_dens(self, X, rows, draw_step):
        """Yield (row slice, draw slice, log_dens (s, n, K)) blocks."""
        weights, means, prec_chol, _ = self._draws()
        S = weights.shape[0]
        for r0 in range(0, X.shape[0], rows):
            rs = slice(r0, min(r0 + rows, X.shape[0]))
            for s0 in range(0, S, draw_step):
                ds = slice(s0, min(s0 + draw_step, S))
                yield rs, ds, component_log_density(X[rs], weights[ds], means[ds], prec_chol[ds])

    def predict_proba(self, X):
        """Posterior mean of each point's membership probabilities.

        ``p(z_n = k | x_n, theta)`` is computed exactly for each draw and averaged
        over the draws, in chunks of rows and draws.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_components)
        """
        X = self._check_X(X)
        S = self._draws()[0].shape[0]
        rows, step = self._chunks(X.shape[0], S)
        out = np.zeros((X.shape[0], self.n_components_))
        for rs, _, ld in self._iter_log_dens(X, rows, step):
            out[rs] += normalize(ld, axis=-1)[1].sum(axis=0)
        return out / S

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
        X = self._check_X(X)
        S = self._draws()[0].shape[0]
        K = self.n_components_
        rows, step = self._chunks(X.shape[0], S, all_draws=True)
        mean = np.empty((X.shape[0], K))
        lower, upper = np.empty_like(mean), np.empty_like(mean)
        q = [(1 - prob) / 2, (1 + prob) / 2]
        block = None
        for rs, ds, ld in self._iter_log_dens(X, rows, step):
            if ds.start == 0:
                block = np.empty((S, rs.stop - rs.start, K))
            block[ds] = normalize(ld, axis=-1)[1]
            if ds.stop == S:
                mean[rs] = block.mean(axis=0)
                lower[rs], upper[rs] = np.quantile(block, q, axis=0)
        dims = ("obs", "component")
        return xr.Dataset(
            {"mean": (dims, mean), "lower": (dims, lower), "upper": (dims, upper)},
            coords={"component": np.arange(K)},
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

    def _pointwise_log_lik(self, X):
        """log p(x_n | theta_s) for every draw: (S, n), chunked."""
        S = self._draws()[0].shape[0]
        rows, step = self._chunks(X.shape[0], S)
        out = np.empty((S, X.shape[0]))
        for rs, ds, ld in self._iter_log_dens(X, rows, step):
            out[ds, rs] = normalize(ld, axis=-1)[0]
        return out

    def score_samples(self, X):
        """Log posterior predictive density ``log mean_s p(x | theta_s)`` of each point.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        S = self._draws()[0].shape[0]
        rows, step = self._chunks(X.shape[0], S)
        acc = np.full(X.shape[0], -np.inf)
        for rs, _, ld in self._iter_log_dens(X, rows, step):
            block = normalize(normalize(ld, axis=-1)[0], axis=0)[0]
            acc[rs] = np.logaddexp(acc[rs], block)
        return acc - np.log(S)

    def score(self, X, y=None):
        """Mean log posterior predictive density of ``X``."""
        return float(np.mean(self.score_samples(X)))

    def _log_likelihood_dataset(self, X):
        import xarray as xr

        C, S = self.idata_["posterior"].sizes["chain"], self.idata_["posterior"].sizes["draw"]
        ll = self._pointwise_log_lik(X).reshape(C, S, X.shape[0])
        return xr.Dataset({"X": (("chain", "draw", "obs"), ll)})

    def sample_posterior_predictive(self, n_samples=None, n_draws=None, random_state=None):
        """Replicated data sets, one per posterior draw.

        Parameters
        ----------
        n_samples : int, default=None
            Points per replicate; default: the training size.
        n_draws : int, default=None
            Use this many posterior draws per chain (the first ones after
            thinning evenly); default: all, or fewer so the result stays under
            about 5e7 numbers.
        random_state : int, Generator or None

        Returns
        -------
        xarray.Dataset
            ``X`` with dims (chain, draw, obs, feature) and ``component`` (the
            generating component) with dims (chain, draw, obs). Also stored in
            ``idata_["posterior_predictive"]``.
        """
        import xarray as xr

        check_is_fitted(self, "idata_")
        post = self.idata_["posterior"]
        C, D = post.sizes["chain"], post.sizes["draw"]
        n = self.idata_["observed_data"].sizes["obs"] if n_samples is None else n_samples
        n = check_int(n, "n_samples", 1)
        d, K = self.n_features_in_, self.n_components_
        if n_draws is None:
            n_draws = int(max(1, min(D, 5e7 // (C * n * d))))
        n_draws = min(check_int(n_draws, "n_draws", 1), D)
        idx = np.linspace(0, D - 1, n_draws).round().astype(int)
        rng = np.random.default_rng(random_state)
        weights, means, _, covs = self._draws()
        sel = (np.arange(C)[:, None] * D + idx[None]).ravel()
        chol = np.linalg.cholesky(covs[sel])  # (S', K, d, d)
        S2 = sel.size
        u = rng.random((S2, n, 1))
        labels = np.minimum((u > np.cumsum(weights[sel], axis=1)[:, None, :]).sum(-1), K - 1)
        eps = rng.standard_normal((S2, n, d))
        rows = np.arange(S2)[:, None]
        Xrep = means[sel][rows, labels] + np.einsum(
            "snde,sne->snd", chol[rows, labels], eps, optimize=True
        )
        ds = xr.Dataset(
            {
                "X": (("chain", "draw", "obs", "feature"), Xrep.reshape(C, n_draws, n, d)),
                "component": (("chain", "draw", "obs"), labels.reshape(C, n_draws, n)),
            },
            coords={"chain": np.arange(C), "draw": idx},
        )
        self.idata_["posterior_predictive"] = ds
        return ds

    def loo(self, **kwargs):
        """PSIS-LOO of the training data (``arviz_stats.loo``).

        Returns
        -------
        ELPDData
        """
        import arviz as az

        check_is_fitted(self, "idata_")
        tree = self.idata_
        if "log_likelihood" not in tree.children:
            X = np.asarray(tree["observed_data"]["X"])
            tree["log_likelihood"] = self._log_likelihood_dataset(X)
        return az.loo(tree, var_name="X", **kwargs)

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
        config = json.loads(self.idata_.attrs["bayes_gmm"])
        return (
            f"BayesianGaussianMixture: {config['n_components']} component(s), covariance_type="
            f"{config['covariance_type']!r}, {post.sizes['chain']} chains x "
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
        """
        check_is_fitted(self, "idata_")
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        tree = self.idata_.copy()
        tree.attrs = {"bayes_gmm": json.dumps(self._saved_config())}
        try:
            if path.suffix in (".nc", ".h5", ".netcdf"):
                try:
                    import h5py  # noqa: F401  (h5netcdf writes through it)
                except ImportError:
                    raise ImportError(
                        "Saving to netCDF needs h5py (`pip install h5py`); or save to a "
                        "'.zarr' path instead."
                    ) from None
                tree.to_netcdf(tmp, engine="h5netcdf")
            else:
                tree.to_zarr(tmp, consolidated=False)
            _replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                if tmp.is_dir():
                    shutil.rmtree(tmp)
                else:
                    tmp.unlink()
        return path

    def _saved_config(self):
        config = dict(json.loads(self.idata_.attrs["bayes_gmm"]))
        # Every field of the report, so that load rebuilds it with DiagnosticsReport(**...).
        report = self.diagnostics_
        config["diagnostics"] = {
            f.name: _to_json(getattr(report, f.name)) for f in dataclasses.fields(report)
        }
        return config

    @classmethod
    def load(cls, path):
        """Rebuild a fitted model written by :meth:`save`.

        Parameters
        ----------
        path : str or Path

        Returns
        -------
        BayesianGaussianMixture
        """
        import xarray as xr

        from bayes_gmm.diagnostics import DiagnosticsReport
        from bayes_gmm.em import GaussianMixture

        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"No saved model at '{path}'.")
        engine = "h5netcdf" if path.is_file() else "zarr"
        kwargs = {} if engine == "h5netcdf" else {"consolidated": False}
        with xr.open_datatree(path, engine=engine, **kwargs) as opened:
            tree = opened.load()
        try:
            config = json.loads(tree.attrs["bayes_gmm"])
        except KeyError:
            raise ValueError(f"'{path}' was not written by BayesianGaussianMixture.save.") from None
        params = dict(config["params"])
        if params["prior"] is not None:
            params["prior"] = GaussianMixturePrior.from_dict(params["prior"])
        prior = GaussianMixturePrior.from_dict(config["prior"])
        model = cls(**params)
        K, d, ctype = config["n_components"], config["n_features"], config["covariance_type"]
        model.n_components_, model.covariance_type_, model.n_features_in_ = K, ctype, d
        names = config["feature_names"]
        if names is not None:
            model.feature_names_in_ = np.asarray(names, dtype=object)
        em_ds = tree["em_estimate"]
        em = GaussianMixture(K, covariance_type=ctype, prior=prior)
        em.weights_ = np.asarray(em_ds["weights"])
        em.means_ = np.asarray(em_ds["means"])
        em.covariances_ = np.asarray(em_ds["covariances"])
        em.n_features_in_ = d
        model.em_ = em
        model.selection_ = None
        diag = dict(config.pop("diagnostics"))
        diag["bfmi"] = np.asarray(diag["bfmi"], dtype=float)
        diag["relabelled"] = np.asarray(diag["relabelled"], dtype=int)
        model.diagnostics_ = DiagnosticsReport(**diag)
        model.timings_ = config["timings"]
        tree.attrs = {"bayes_gmm": json.dumps(config)}
        model.idata_ = tree
        model._draw_cache = None
        X = np.asarray(tree["observed_data"]["X"])
        w = np.asarray(tree["observed_data"]["sample_weight"])
        model.prior_ = prior.resolve(X, K, ctype, sample_weight=w)
        return model


# ---------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------


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


def _jitter_scale(structure, values, weights, covariances, total_weight):
    """Approximate posterior sd of each unconstrained coordinate (``1/sqrt(n_k)`` scaled).

    ``values`` are the free variables at (``weights``, ``covariances``) and the means,
    as :func:`bayes_gmm.model.to_unconstrained` returns them.
    """
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    n_k = np.maximum(np.asarray(weights) * total_weight, 1.0)  # (K,)
    inv_sqrt = 1.0 / np.sqrt(n_k)
    covs = full_covariances(covariances, ctype, K, d)
    sd = np.sqrt(np.diagonal(covs, axis1=-2, axis2=-1))  # (K, d)
    n_all = float(max(total_weight, 1.0))
    scales = {}
    if K > 1:
        scales["weights_logratio"] = inv_sqrt[:-1]
    if structure.ordered:
        first = np.concatenate([sd[:1, 0] * inv_sqrt[:1], inv_sqrt[1:]])
        scales["means_first"] = first
        if d > 1:
            scales["means_rest"] = sd[:, 1:] * inv_sqrt[:, None]
    else:
        scales["means"] = sd * inv_sqrt[:, None]
    if ctype in ("full", "tied"):
        per = inv_sqrt[:, None] if ctype == "full" else np.asarray(1.0 / np.sqrt(n_all))
        scales["prec_chol_logdiag"] = np.broadcast_to(per, (K, d) if ctype == "full" else (d,))
        if d > 1:
            m = d * (d - 1) // 2
            rows, _ = np.tril_indices(d, -1)
            u_diag = np.exp(values["prec_chol_logdiag"])
            scales["prec_chol_offdiag"] = u_diag[..., rows] * np.broadcast_to(
                per, (K, m) if ctype == "full" else (m,)
            )
    elif ctype == "diag":
        scales["log_precision"] = np.broadcast_to(inv_sqrt[:, None], (K, d))
    else:
        scales["log_precision"] = inv_sqrt / np.sqrt(d)
    return flatten(structure, scales)


def _permute_cov(cov, perm, ctype):
    return cov if ctype == "tied" else cov[perm]


# Dims of one covariance array per type, after any (chain, draw) batch.
_COV_DIMS = {
    "full": ("component", "feature", "feature_"),
    "tied": ("feature", "feature_"),
    "diag": ("component", "feature"),
    "spherical": ("component",),
}


def _feature_labels(feature_names, n_features):
    """The ``feature`` coordinate: the DataFrame's column names, else x0, x1, ..."""
    if feature_names is not None:
        return list(feature_names)
    return [f"x{j}" for j in range(n_features)]


def _posterior_dataset(weights, means, covariances, ctype, feature_names):
    import xarray as xr

    C, S, K, d = means.shape
    features = _feature_labels(feature_names, d)
    return xr.Dataset(
        {
            "weights": (("chain", "draw", "component"), weights),
            "means": (("chain", "draw", "component", "feature"), means),
            "covariances": (("chain", "draw", *_COV_DIMS[ctype]), covariances),
        },
        coords={
            "chain": np.arange(C),
            "draw": np.arange(S),
            "component": np.arange(K),
            "feature": features,
            "feature_": features,
        },
    )


def _build_tree(posterior, stats, X, w, em, config, feature_names):
    import xarray as xr

    features = _feature_labels(feature_names, X.shape[1])
    observed = xr.Dataset(
        {"X": (("obs", "feature"), X), "sample_weight": (("obs",), w)},
        coords={"feature": features},
    )
    em_ds = xr.Dataset(
        {
            "weights": (("component",), np.asarray(em.weights_)),
            "means": (("component", "feature"), np.asarray(em.means_)),
            "covariances": (_COV_DIMS[config["covariance_type"]], np.asarray(em.covariances_)),
        },
        coords={
            "component": np.arange(config["n_components"]),
            "feature": features,
            "feature_": features,
        },
        attrs={"log_posterior": float(getattr(em, "log_likelihood_", np.nan))},
    )
    tree = xr.DataTree.from_dict(
        {
            "posterior": posterior,
            "sample_stats": stats,
            "observed_data": observed,
            "em_estimate": em_ds,
        }
    )
    return tree


def _replace(tmp, path):
    """Move ``tmp`` to ``path``, replacing what is there only once ``tmp`` is complete."""
    if path.is_dir():
        old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, path)
