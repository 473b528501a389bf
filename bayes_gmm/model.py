"""The PyMC model of a Gaussian mixture with the labels summed out, and its numpy twin.

Stage 1 of the Bayesian pipeline (model -> relabel -> diagnostics -> estimator).
This module knows the model's parameterization; nothing here samples.

The model is exactly the conjugate prior of :mod:`bayes_gmm.priors` (the one
the EM engine maximizes for MAP), written on an unconstrained scale so NUTS can
explore it. For ``K`` components and ``d`` features::

    weights             ~ Dirichlet(alpha * ones(K))
    full:   P_k = Sigma_k^-1 ~ Wishart(nu, Lambda^-1)     (Sigma_k ~ InvWishart(nu, Lambda))
    tied:   P   = Sigma^-1   ~ Wishart(nu, Lambda^-1)
    diag:   tau_kj = 1 / s2_kj ~ Gamma(nu / 2, rate = lambda_j / 2)
    spherical: tau_k = 1 / s2_k ~ Gamma(nu / 2, rate = lambda / 2)
    mu_k | P_k          ~ Normal(m0, (kappa P_k)^-1)
    x_n                 ~ sum_k weights_k Normal(mu_k, P_k^-1)      (labels summed out)

Free (unconstrained) variables, all ``pm.Flat`` with the log density and the
log-Jacobians added in two ``pm.Potential`` terms ("prior" and "loglik"):

- ``weights_logratio`` (K-1,): ``weights = softmax([eta, 0])``; the Dirichlet
  density times this transform's Jacobian is ``alpha * sum(log weights)``.
- ``means`` (K, d); or, with ``ordered=True``, ``means_first`` (K,) holding
  ``[mu_10, log(mu_20 - mu_10), ...]`` (first coordinates strictly increasing)
  and ``means_rest`` (K, d-1).
- full / tied: ``prec_chol_logdiag`` and ``prec_chol_offdiag``, the lower
  Cholesky factor ``U`` of the precision ``P = U U^T`` with a log diagonal. The
  Jacobian of ``U -> U U^T`` is ``2^d prod_i U_ii^(d-i+1)`` (Muirhead 1982,
  Thm 2.1.9), times ``prod_i U_ii`` for the log.
- diag / spherical: ``log_precision`` (K, d) or (K,).

Two implementations of the same density, checked against each other in the tests
(tests/test_bayesian_model.py: log density to rtol 1e-12 and gradient to rtol 1e-10,
both with atol 1e-9, at random points of every structure):

- :func:`build_model`, the PyMC model (``backend="pymc"``: compiled by nutpie with
  numba once per structure and process);
- :func:`logp_and_grad`, a closed-form gradient in one numba kernel (the default,
  ``backend="numpy"``): its gradient is the EM engine's sufficient statistics pushed
  through the parameterization, one pass over the data per evaluation. It compiles once
  for *every* structure (K, d and the covariance type are run-time arguments).

Compile times, from ``benchmarks/bench_nuts.py --seeds 1 --no-peer [--cold-cache]
[--backend pymc]`` (the "compile" column; K=3, d=2, full, one run each on a 2-core
machine): the PyMC graph 94 s with empty numba/PyTensor caches and 15 s with warm
ones; the numba kernel 8.3 s with an empty cache and 0.2 s from its disk cache.

Why not ``pm.Mixture`` over ``pm.MvNormal`` with ``pm.LKJCholeskyCov``: working on the
precision Cholesky factor turns every Mahalanobis distance into a product (no
triangular solves), and gives the exact inverse-Wishart prior that the EM engine uses,
so the EM/MAP estimate is the mode of this very model (up to the Jacobian of the
unconstrained scale). The likelihood is a weighted sum (``sample_weight``), so in the
PyMC graph it lives in a Potential; the pointwise log-likelihood and the posterior
predictive are computed in numpy from the draws (:func:`component_log_density`).

In the PyMC graph, data and hyperparameters are ``pm.Data``, so a compiled model of one
structure ``(K, d, covariance_type, ordered)`` serves every data set and prior
(:func:`get_compiled`).
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
from scipy.special import logsumexp

__all__ = [
    "ModelStructure",
    "build_model",
    "component_log_density",
    "covariances_from_prec_chol",
    "flatten",
    "free_variables",
    "get_compiled",
    "logp_and_grad",
    "make_nutpie_model",
    "model_data",
    "params_from_draws",
    "to_unconstrained",
    "unflatten",
]

LOG_2PI = float(np.log(2.0 * np.pi))


@dataclasses.dataclass(frozen=True)
class ModelStructure:
    """What fixes the compiled graph: everything else is data."""

    n_components: int
    n_features: int
    covariance_type: str
    ordered: bool = False


def _tril(d):
    return np.tril_indices(d, -1)


# ---------------------------------------------------------------------------
# PyMC graph
# ---------------------------------------------------------------------------


def build_model(structure):
    """The PyMC model for one structure, with placeholder data.

    Parameters
    ----------
    structure : ModelStructure

    Returns
    -------
    pymc.Model
        Data containers: ``X`` (n, d), ``sample_weight`` (n,), ``prior_mean``
        (d,), ``prior_scale_chol`` (d, d) for full/tied (lower Cholesky factor of
        ``Lambda``), ``prior_scale`` (d,) diag or () spherical, and the scalars
        ``alpha``, ``kappa``, ``nu``. Fill them with :func:`model_data`.
    """
    import pymc as pm
    import pytensor.tensor as pt

    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    with pm.Model() as model:
        X = pm.Data("X", np.zeros((2, d)))
        sw = pm.Data("sample_weight", np.ones(2))
        m0 = pm.Data("prior_mean", np.zeros(d))
        alpha = pm.Data("alpha", np.asarray(1.0))
        kappa = pm.Data("kappa", np.asarray(0.01))
        nu = pm.Data("nu", np.asarray(float(d + 2)))
        if ctype in ("full", "tied"):
            C = pm.Data("prior_scale_chol", np.eye(d))
        elif ctype == "diag":
            lam = pm.Data("prior_scale", np.ones(d))
        else:
            lam = pm.Data("prior_scale", np.asarray(1.0))

        # Weights: softmax of [eta, 0]; Dirichlet density x Jacobian = alpha * sum(log w).
        if K > 1:
            eta = pm.Flat("weights_logratio", shape=(K - 1,))
            eta_full = pt.concatenate([eta, pt.zeros((1,))])
            log_w = eta_full - pt.logsumexp(eta_full)
            prior_terms = [alpha * pt.sum(log_w)]
        else:
            log_w = pt.zeros((1,))
            prior_terms = []

        if structure.ordered:
            first_raw = pm.Flat("means_first", shape=(K,))
            first = pt.concatenate([first_raw[:1], first_raw[0] + pt.cumsum(pt.exp(first_raw[1:]))])
            prior_terms.append(pt.sum(first_raw[1:]))
            if d > 1:
                rest = pm.Flat("means_rest", shape=(K, d - 1))
                mu = pt.concatenate([first[:, None], rest], axis=1)
            else:
                mu = first[:, None]
        else:
            mu = pm.Flat("means", shape=(K, d))

        diff = X[:, None, :] - mu[None, :, :]  # (n, K, d)
        if ctype in ("full", "tied"):
            batch = (K,) if ctype == "full" else ()
            m = d * (d - 1) // 2
            logdiag = pm.Flat("prec_chol_logdiag", shape=(*batch, d))
            U = pt.zeros((*batch, d, d))
            idx = np.arange(d)
            U = pt.set_subtensor(U[..., idx, idx], pt.exp(logdiag))
            if m:
                offdiag = pm.Flat("prec_chol_offdiag", shape=(*batch, m))
                rows, cols = _tril(d)
                U = pt.set_subtensor(U[..., rows, cols], offdiag)
            # Wishart(nu, Lambda^-1) on P = U U^T, with the Jacobians of U -> P and of the log.
            jac_power = (d - idx + 1).astype(float)
            CtU = pt.matmul(C.T, U)
            prior_terms.append(
                pt.sum((nu - d - 1.0) * logdiag + jac_power * logdiag) - 0.5 * pt.sum(CtU**2)
            )
            # Mahalanobis through the precision factor: ||U^T (x - mu)||^2.
            if ctype == "full":
                half_logdet = pt.sum(logdiag, axis=-1)  # (K,)
                # One GEMM for all components: X (n, d) @ U arranged as (d, K * d).
                xu = pt.dot(X, U.dimshuffle(1, 0, 2).reshape((d, K * d)))
                mu_u = pt.sum(mu[:, :, None] * U, axis=1)  # (K, d)
                z = xu.reshape((X.shape[0], K, d)) - mu_u[None]  # (n, K, d)
                z0 = pt.sum((mu - m0)[:, :, None] * U, axis=1)  # (K, d)
            else:
                half_logdet = pt.sum(logdiag) * pt.ones((K,))
                z = pt.dot(diff, U)
                z0 = pt.dot(mu - m0, U)
            maha = pt.sum(z**2, axis=-1)  # (n, K)
            mean_prior = pt.sum(half_logdet) - 0.5 * kappa * pt.sum(z0**2)
        else:
            t = pm.Flat("log_precision", shape=(K, d) if ctype == "diag" else (K,))
            tau = pt.exp(t)
            # Gamma(nu/2, rate lam/2) on the precision, times the log's Jacobian.
            prior_terms.append(pt.sum(0.5 * nu * t - 0.5 * lam * tau))
            if ctype == "diag":
                half_logdet = 0.5 * pt.sum(t, axis=-1)
                maha = pt.sum(diff**2 * tau[None], axis=-1)
                mean_prior = pt.sum(half_logdet) - 0.5 * kappa * pt.sum(tau * (mu - m0) ** 2)
            else:
                half_logdet = 0.5 * d * t
                maha = pt.sum(diff**2, axis=-1) * tau[None]
                mean_prior = pt.sum(half_logdet) - 0.5 * kappa * pt.sum(
                    tau * pt.sum((mu - m0) ** 2, axis=-1)
                )
        prior_terms.append(mean_prior + 0.5 * K * d * pt.log(kappa))

        log_dens = log_w[None, :] + half_logdet[None, :] - 0.5 * maha - 0.5 * d * LOG_2PI
        pm.Potential("prior", pt.sum(prior_terms))
        pm.Potential("loglik", pt.sum(sw * pt.logsumexp(log_dens, axis=1)))
    return model


def model_data(X, sample_weight, resolved):
    """Values for the ``pm.Data`` containers of :func:`build_model`.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    sample_weight : ndarray of shape (n_samples,)
    resolved : bayes_gmm.priors.ResolvedPrior

    Returns
    -------
    dict
    """
    data = {
        "X": np.ascontiguousarray(X, dtype=float),
        "sample_weight": np.ascontiguousarray(sample_weight, dtype=float),
        "prior_mean": np.asarray(resolved.mean, dtype=float),
        "alpha": np.asarray(resolved.weight_concentration, dtype=float),
        "kappa": np.asarray(resolved.mean_precision, dtype=float),
        "nu": np.asarray(resolved.degrees_of_freedom, dtype=float),
    }
    if resolved.covariance_type in ("full", "tied"):
        data["prior_scale_chol"] = np.linalg.cholesky(np.asarray(resolved.scale, dtype=float))
    else:
        data["prior_scale"] = np.asarray(resolved.scale, dtype=float)
    return data


# ---------------------------------------------------------------------------
# The same log density and its gradient in numpy (the default sampling path)
# ---------------------------------------------------------------------------


def free_variables(structure):
    """Names and shapes of the free variables, in the order of the flat vector.

    Returns
    -------
    list of (str, tuple)
    """
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    out = []
    if K > 1:
        out.append(("weights_logratio", (K - 1,)))
    if structure.ordered:
        out.append(("means_first", (K,)))
        if d > 1:
            out.append(("means_rest", (K, d - 1)))
    else:
        out.append(("means", (K, d)))
    if ctype in ("full", "tied"):
        batch = (K,) if ctype == "full" else ()
        out.append(("prec_chol_logdiag", (*batch, d)))
        if d > 1:
            out.append(("prec_chol_offdiag", (*batch, d * (d - 1) // 2)))
    else:
        out.append(("log_precision", (K, d) if ctype == "diag" else (K,)))
    return out


def unflatten(structure, theta):
    """dict name -> array from a flat vector (see :func:`free_variables`)."""
    out, pos = {}, 0
    for name, shape in free_variables(structure):
        size = int(np.prod(shape))
        out[name] = theta[pos : pos + size].reshape(shape)
        pos += size
    return out


def flatten(structure, values):
    """Flat vector from a dict name -> array (inverse of :func:`unflatten`)."""
    return np.concatenate(
        [
            np.asarray(values[n], dtype=float).reshape(s).ravel()
            for n, s in free_variables(structure)
        ]
    )


def _logp_and_grad_numpy(structure, theta, data):
    """:func:`logp_and_grad` in vectorized numpy: the reference for its numba kernel."""
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    v = unflatten(structure, theta)
    X, sw = data["X"], data["sample_weight"]
    m0, alpha, kappa, nu = data["prior_mean"], data["alpha"], data["kappa"], data["nu"]
    grads = {}

    if K > 1:
        eta = np.append(v["weights_logratio"], 0.0)
        log_w = eta - logsumexp(eta)
    else:
        log_w = np.zeros(1)
    if structure.ordered:
        raw = v["means_first"]
        first = raw[0] + np.concatenate([[0.0], np.cumsum(np.exp(raw[1:]))])
        mu = np.column_stack([first, v["means_rest"]]) if d > 1 else first[:, None]
        logp = float(np.sum(raw[1:]))
    else:
        mu = v["means"]
        logp = 0.0

    dm = mu - m0  # (K, d)
    idx = np.arange(d)
    if ctype in ("full", "tied"):
        z = v["prec_chol_logdiag"]
        U = np.zeros((*z.shape, d))
        U[..., idx, idx] = np.exp(z)
        if d > 1:
            rows, cols = _tril(d)
            U[..., rows, cols] = v["prec_chol_offdiag"]
        Uk = U if ctype == "full" else np.broadcast_to(U, (K, d, d))
        half_logdet = z.sum(axis=-1) * np.ones(K)  # (K,)
    else:
        t = v["log_precision"]
        tau = np.exp(t)
        sqrt_tau = np.exp(0.5 * t)
        if ctype == "diag":
            Uk = sqrt_tau[:, :, None] * np.eye(d)
            half_logdet = 0.5 * t.sum(axis=-1)
        else:
            Uk = sqrt_tau[:, None, None] * np.eye(d)
            half_logdet = 0.5 * d * t

    # Likelihood and its sufficient statistics: R_k = sum_n r_nk, A_k = sum_n r_nk U_k^T y_nk,
    # B_k = sum_n r_nk y_nk (U_k^T y_nk)^T with y_nk = x_n - mu_k and r the weighted
    # responsibilities; the gradient of every parameter is a function of these.
    loglik, Rk, A, B = _likelihood_stats_numpy(
        X, sw, log_w, mu, np.ascontiguousarray(Uk), half_logdet
    )
    logp += loglik

    # d/d log_w: likelihood counts + Dirichlet; then through the softmax.
    g_logw = Rk + alpha
    logp += float(alpha * log_w.sum())
    if K > 1:
        g_eta = g_logw - np.exp(log_w) * g_logw.sum()
        grads["weights_logratio"] = g_eta[:-1]

    if ctype in ("full", "tied"):
        g_mu = np.einsum("kde,ke->kd", Uk, A)
        G = -B  # dL/dU of -0.5 ||U^T y||^2, summed over the data: -(sum r y y^T) U
        t0 = np.einsum("kd,kde->ke", dm, Uk)  # U^T (mu - m0)
        g_mu -= kappa * np.einsum("kde,ke->kd", Uk, t0)
        G -= kappa * dm[:, :, None] * t0[:, None, :]
        if ctype == "tied":
            G = G.sum(axis=0)
        C = data["prior_scale_chol"]
        G -= (C @ C.T) @ U
        jac_power = (d - idx + 1).astype(float)
        n_logdet = Rk + 1.0 if ctype == "full" else Rk.sum() + K  # likelihood + mean prior
        g_z = (
            (n_logdet[:, None] if ctype == "full" else n_logdet)
            + (nu - d - 1.0)
            + jac_power
            + G[..., idx, idx] * np.exp(z)
        )
        CtU = C.T @ U
        logp += float(
            np.sum(((nu - d - 1.0) + jac_power) * z)
            - 0.5 * np.sum(CtU**2)
            + np.sum(half_logdet)
            - 0.5 * kappa * np.sum(t0**2)
        )
        grads["prec_chol_logdiag"] = g_z
        if d > 1:
            grads["prec_chol_offdiag"] = G[..., rows, cols]
    else:
        lam = data["prior_scale"]
        Bdiag = np.diagonal(B, axis1=-2, axis2=-1)  # sum_n r sqrt(tau) y^2
        if ctype == "diag":
            g_mu = sqrt_tau * A - kappa * tau * dm
            g_t = (
                0.5 * Rk[:, None]
                - 0.5 * sqrt_tau * Bdiag
                + 0.5 * nu
                - 0.5 * lam * tau
                + 0.5
                - 0.5 * kappa * tau * dm**2
            )
            mean_quad = np.sum(tau * dm**2)
        else:
            dm2 = np.sum(dm**2, axis=1)
            g_mu = sqrt_tau[:, None] * A - kappa * tau[:, None] * dm
            g_t = (
                0.5 * d * Rk
                - 0.5 * sqrt_tau * Bdiag.sum(axis=1)
                + 0.5 * nu
                - 0.5 * lam * tau
                + 0.5 * d
                - 0.5 * kappa * tau * dm2
            )
            mean_quad = np.sum(tau * dm2)
        logp += float(
            np.sum(0.5 * nu * t - 0.5 * lam * tau) + np.sum(half_logdet) - 0.5 * kappa * mean_quad
        )
        grads["log_precision"] = g_t
    logp += 0.5 * K * d * float(np.log(kappa))

    if structure.ordered:
        gf = g_mu[:, 0]
        tail = np.cumsum(gf[::-1])[::-1]  # sum_{k >= j} g_k
        g_raw = np.concatenate([[gf.sum()], np.exp(raw[1:]) * tail[1:] + 1.0])
        grads["means_first"] = g_raw
        if d > 1:
            grads["means_rest"] = g_mu[:, 1:]
    else:
        grads["means"] = g_mu
    return logp, flatten(structure, grads)


def _make_numba_logp():
    import numba

    @numba.njit(cache=True, nogil=True)
    def logp_grad(theta, X, sw, m0, alpha, kappa, nu, Lam, lam, K, d, ctype, ordered):
        # A loop-level port of _logp_and_grad_numpy (tests compare the two).
        grad = np.zeros(theta.size)
        logp = 0.0
        pos = 0
        log_w = np.zeros(K)
        if K > 1:
            mx = 0.0
            for k in range(K - 1):
                mx = max(mx, theta[k])
            s = np.exp(-mx)
            for k in range(K - 1):
                s += np.exp(theta[k] - mx)
            lse = mx + np.log(s)
            for k in range(K - 1):
                log_w[k] = theta[k] - lse
            log_w[K - 1] = -lse
            pos = K - 1
        mu = np.empty((K, d))
        mf_pos = pos
        if ordered:
            mu[0, 0] = theta[pos]
            for k in range(1, K):
                mu[k, 0] = mu[k - 1, 0] + np.exp(theta[pos + k])
                logp += theta[pos + k]
            pos += K
            for k in range(K):
                for j in range(1, d):
                    mu[k, j] = theta[pos + k * (d - 1) + j - 1]
            pos += K * (d - 1)
        else:
            for k in range(K):
                for j in range(d):
                    mu[k, j] = theta[pos + k * d + j]
            pos += K * d
        U = np.zeros((K, d, d))
        hl = np.zeros(K)
        m = d * (d - 1) // 2
        nb = K if ctype == 0 else 1
        z_pos = pos
        o_pos = pos + nb * d
        if ctype <= 1:
            for b in range(nb):
                for i in range(d):
                    U[b, i, i] = np.exp(theta[z_pos + b * d + i])
                c = 0
                for i in range(d):
                    for j in range(i):
                        U[b, i, j] = theta[o_pos + b * m + c]
                        c += 1
            if ctype == 1:
                for k in range(1, K):
                    U[k] = U[0]
            for k in range(K):
                for i in range(d):
                    hl[k] += np.log(U[k, i, i])
        else:
            for k in range(K):
                for i in range(d):
                    t = theta[z_pos + k * d + i] if ctype == 2 else theta[z_pos + k]
                    U[k, i, i] = np.exp(0.5 * t)
                    hl[k] += 0.5 * t
        diagonal = ctype >= 2

        # Likelihood and its statistics (see _likelihood_stats_numpy).
        n = X.shape[0]
        R = np.zeros(K)
        A = np.zeros((K, d))
        B = np.zeros((K, d, d))
        a = np.empty(K)
        y = np.empty((K, d))
        zt = np.empty((K, d))
        const = 0.5 * d * np.log(2.0 * np.pi)
        for i in range(n):
            amax = -np.inf
            for k in range(K):
                mm = 0.0
                for e in range(d):
                    y[k, e] = X[i, e] - mu[k, e]
                for e in range(d):
                    if diagonal:
                        s = y[k, e] * U[k, e, e]
                    else:
                        s = 0.0
                        for f in range(e, d):
                            s += U[k, f, e] * y[k, f]
                    zt[k, e] = s
                    mm += s * s
                a[k] = log_w[k] + hl[k] - 0.5 * mm - const
                if a[k] > amax:
                    amax = a[k]
            tot = 0.0
            for k in range(K):
                a[k] = np.exp(a[k] - amax)
                tot += a[k]
            logp += sw[i] * (np.log(tot) + amax)
            scale = sw[i] / tot
            for k in range(K):
                r = a[k] * scale
                R[k] += r
                for e in range(d):
                    A[k, e] += r * zt[k, e]
                    if diagonal:
                        B[k, e, e] += r * y[k, e] * zt[k, e]
                    else:
                        for f in range(d):
                            B[k, e, f] += r * y[k, e] * zt[k, f]

        # Weights: Dirichlet x softmax Jacobian = alpha * sum(log w).
        gsum = 0.0
        for k in range(K):
            logp += alpha * log_w[k]
            gsum += R[k] + alpha
        for k in range(K - 1):
            grad[k] = R[k] + alpha - np.exp(log_w[k]) * gsum

        g_mu = np.zeros((K, d))
        dm = np.empty((K, d))
        for k in range(K):
            for j in range(d):
                dm[k, j] = mu[k, j] - m0[j]
        if ctype <= 1:
            t0 = np.zeros((K, d))
            for k in range(K):
                for e in range(d):
                    for f in range(e, d):
                        t0[k, e] += U[k, f, e] * dm[k, f]
            G = np.zeros((nb, d, d))
            for k in range(K):
                b = k if ctype == 0 else 0
                for i in range(d):
                    for e in range(i + 1):  # U[k, i, e] is zero above the diagonal
                        g_mu[k, i] += U[k, i, e] * (A[k, e] - kappa * t0[k, e])
                    for e in range(d):
                        G[b, i, e] -= B[k, i, e] + kappa * dm[k, i] * t0[k, e]
                    logp -= 0.5 * kappa * t0[k, i] * t0[k, i]
                logp += hl[k]
            total_R = 0.0
            for k in range(K):
                total_R += R[k]
            for b in range(nb):
                LU = Lam @ U[b]
                n_logdet = R[b] + 1.0 if ctype == 0 else total_R + K
                for i in range(d):
                    z = np.log(U[b, i, i])
                    power = (nu - d - 1.0) + (d - i + 1.0)
                    for e in range(d):
                        G[b, i, e] -= LU[i, e]
                        logp -= 0.5 * U[b, i, e] * LU[i, e]
                    logp += power * z
                    grad[z_pos + b * d + i] = n_logdet + power + G[b, i, i] * U[b, i, i]
                c = 0
                for i in range(d):
                    for j in range(i):
                        grad[o_pos + b * m + c] = G[b, i, j]
                        c += 1
        else:
            for k in range(K):
                if ctype == 2:
                    for i in range(d):
                        st = U[k, i, i]
                        tau = st * st
                        t = theta[z_pos + k * d + i]
                        g_mu[k, i] = st * A[k, i] - kappa * tau * dm[k, i]
                        grad[z_pos + k * d + i] = (
                            0.5 * R[k]
                            - 0.5 * st * B[k, i, i]
                            + 0.5 * nu
                            - 0.5 * lam[i] * tau
                            + 0.5
                            - 0.5 * kappa * tau * dm[k, i] ** 2
                        )
                        logp += (
                            0.5 * nu * t
                            - 0.5 * lam[i] * tau
                            + 0.5 * t
                            - 0.5 * kappa * tau * dm[k, i] ** 2
                        )
                else:
                    st = U[k, 0, 0]
                    tau = st * st
                    t = theta[z_pos + k]
                    dm2 = 0.0
                    bsum = 0.0
                    for i in range(d):
                        dm2 += dm[k, i] ** 2
                        bsum += B[k, i, i]
                        g_mu[k, i] = st * A[k, i] - kappa * tau * dm[k, i]
                    grad[z_pos + k] = (
                        0.5 * d * R[k]
                        - 0.5 * st * bsum
                        + 0.5 * nu
                        - 0.5 * lam[0] * tau
                        + 0.5 * d
                        - 0.5 * kappa * tau * dm2
                    )
                    logp += (
                        0.5 * nu * t - 0.5 * lam[0] * tau + 0.5 * d * t - 0.5 * kappa * tau * dm2
                    )
        logp += 0.5 * K * d * np.log(kappa)

        if ordered:
            tail = 0.0
            for k in range(K - 1, 0, -1):
                tail += g_mu[k, 0]
                grad[mf_pos + k] = np.exp(theta[mf_pos + k]) * tail + 1.0
            grad[mf_pos] = tail + g_mu[0, 0]
            for k in range(K):
                for j in range(1, d):
                    grad[mf_pos + K + k * (d - 1) + j - 1] = g_mu[k, j]
        else:
            for k in range(K):
                for j in range(d):
                    grad[mf_pos + k * d + j] = g_mu[k, j]
        return logp, grad

    return logp_grad


_LOGP = []
_CTYPE_CODE = {"full": 0, "tied": 1, "diag": 2, "spherical": 3}


def _kernel_args(structure, data):
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    if ctype in ("full", "tied"):
        C = np.asarray(data["prior_scale_chol"], dtype=float)
        Lam, lam = C @ C.T, np.ones(d)
    else:
        Lam, lam = np.eye(d), np.ones(d) * np.asarray(data["prior_scale"], dtype=float)
    return (
        np.ascontiguousarray(data["X"], dtype=float),
        np.ascontiguousarray(data["sample_weight"], dtype=float),
        np.ascontiguousarray(data["prior_mean"], dtype=float),
        float(data["alpha"]),
        float(data["kappa"]),
        float(data["nu"]),
        np.ascontiguousarray(Lam),
        np.ascontiguousarray(lam),
        int(K),
        int(d),
        _CTYPE_CODE[ctype],
        bool(structure.ordered),
    )


def _numba_logp():
    if not _LOGP:
        _LOGP.append(_make_numba_logp())
    return _LOGP[0]


def logp_and_grad(structure, theta, data):
    """Log density of :func:`build_model` (up to a constant) and its gradient.

    One pass over the data in a numba kernel (compiled once, a few seconds, and
    cached on disk); :func:`_logp_and_grad_numpy` is its vectorized reference. The
    gradient is the EM engine's sufficient statistics (responsibility sums,
    weighted sums and scatter) pushed through the parameterization, so one
    evaluation costs about one E-step. Tests check it against PyTensor's
    autodiff of :func:`build_model` (value rtol 1e-12, gradient rtol 1e-10, both atol
    1e-9) and against the numpy reference (value rtol 1e-12, gradient rtol and atol 1e-9).

    Parameters
    ----------
    structure : ModelStructure
    theta : ndarray of shape (n_free,)
    data : dict
        As returned by :func:`model_data`.

    Returns
    -------
    logp : float
    grad : ndarray of shape (n_free,)
    """
    kernel = _numba_logp()
    return kernel(np.ascontiguousarray(theta, dtype=float), *_kernel_args(structure, data))


def _likelihood_stats_numpy(X, sw, log_w, mu, U, half_logdet):
    """Weighted mixture log-likelihood and the statistics of its gradient.

    ``U`` (K, d, d) are the lower precision factors, ``half_logdet = sum_i log U_k,ii``.
    Returns ``loglik``, ``R_k = sum_n r_nk``, ``A_k = sum_n r_nk U_k^T y_nk`` and
    ``B_k = sum_n r_nk y_nk (U_k^T y_nk)^T`` with ``y_nk = x_n - mu_k`` and ``r`` the
    weighted responsibilities.
    """
    d = X.shape[1]
    Y = X[:, None, :] - mu[None]  # (n, K, d)
    Zt = np.einsum("nkd,kde->nke", Y, U)  # U^T (x - mu)
    a = log_w + half_logdet - 0.5 * np.einsum("nke,nke->nk", Zt, Zt) - 0.5 * d * LOG_2PI
    amax = a.max(axis=1, keepdims=True)
    e = np.exp(a - amax)
    tot = e.sum(axis=1, keepdims=True)
    loglik = float(sw @ (np.log(tot[:, 0]) + amax[:, 0]))
    r = e * (sw[:, None] / tot)
    rZ = r[:, :, None] * Zt
    B = np.einsum("nkd,nke->kde", Y, rZ)
    return loglik, r.sum(axis=0), rZ.sum(axis=0), B


def make_nutpie_model(structure, data):
    """A nutpie model sampling :func:`logp_and_grad` directly: nothing to compile.

    Parameters
    ----------
    structure : ModelStructure
    data : dict
        As returned by :func:`model_data`.

    Returns
    -------
    nutpie PyFuncModel
        The flat layout is :func:`free_variables`.
    """
    from nutpie.compiled_pyfunc import from_pyfunc

    layout = free_variables(structure)
    names = [n for n, _ in layout]
    shapes = [tuple(s) for _, s in layout]
    n_dim = int(sum(np.prod(s) for s in shapes))

    args = _kernel_args(structure, data)
    kernel = _numba_logp()

    def make_logp_fn():
        def logp(x):
            value, grad = kernel(x, *args)
            if not np.isfinite(value):
                raise ValueError("non-finite log density")  # nutpie treats it as divergent
            return value, grad

        return logp

    def make_expand_fn(seed1, seed2, chain):
        def expand(x):
            return {n: np.array(v, dtype=float) for n, v in unflatten(structure, x).items()}

        return expand

    return from_pyfunc(
        n_dim,
        make_logp_fn,
        make_expand_fn,
        [np.dtype("float64")] * len(layout),
        shapes,
        names,
        make_initial_point_fn=lambda seed: np.zeros(n_dim),
    )


# ---------------------------------------------------------------------------
# Compiled-model cache (the PyMC path)
# ---------------------------------------------------------------------------

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()


def get_compiled(structure, backend="numpy", data=None):
    """A nutpie model of ``structure`` filled with ``data``.

    Parameters
    ----------
    structure : ModelStructure
    backend : {"numpy", "pymc"}
        "numpy": :func:`logp_and_grad` through ``nutpie.from_pyfunc`` (no compile).
        "pymc": :func:`build_model` compiled by nutpie with numba, once per
        structure and process (measured times in the module docstring).
    data : dict
        As returned by :func:`model_data`.

    Returns
    -------
    compiled : nutpie model
    timings : dict
        Seconds spent building and compiling ("build", "compile").
    """
    t0 = time.perf_counter()
    if backend == "numpy":
        model = make_nutpie_model(structure, data)
        t1 = time.perf_counter()
        # First call: numba compiles the kernel (or loads it from its disk cache).
        n_free = sum(int(np.prod(s)) for _, s in free_variables(structure))
        logp_and_grad(structure, np.zeros(n_free), data)
        return model, {"build": t1 - t0, "compile": time.perf_counter() - t1}
    with _CACHE_LOCK:
        timings = {"build": 0.0, "compile": 0.0}
        if structure not in _CACHE:
            import nutpie

            model = build_model(structure)
            t1 = time.perf_counter()
            timings["build"] = t1 - t0
            _CACHE[structure] = nutpie.compile_pymc_model(model, jitter_rvs=set())
            timings["compile"] = time.perf_counter() - t1
        compiled = _CACHE[structure]
    return compiled.with_data(**data), timings


# ---------------------------------------------------------------------------
# numpy side: parameters <-> unconstrained values, densities
# ---------------------------------------------------------------------------


def to_unconstrained(structure, weights, means, covariances):
    """Unconstrained values of the free variables at given mixture parameters.

    Parameters
    ----------
    structure : ModelStructure
    weights : ndarray of shape (K,)
    means : ndarray of shape (K, d)
    covariances : ndarray
        scikit-learn shapes: (K, d, d) full, (d, d) tied, (K, d) diag, (K,) spherical.

    Returns
    -------
    dict of str -> ndarray
    """
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    weights = np.clip(np.asarray(weights, dtype=float), 1e-300, None)
    means = np.asarray(means, dtype=float).reshape(K, d)
    out = {}
    if K > 1:
        log_w = np.log(weights / weights.sum())
        out["weights_logratio"] = log_w[:-1] - log_w[-1]
    if structure.ordered:
        order = np.argsort(means[:, 0], kind="stable")
        if not np.all(order == np.arange(K)):
            raise ValueError("ordered=True needs means sorted by their first coordinate.")
        first = means[:, 0]
        gaps = np.maximum(np.diff(first), 1e-8 * max(np.ptp(first), 1.0))
        out["means_first"] = np.concatenate([first[:1], np.log(gaps)])
        if d > 1:
            out["means_rest"] = means[:, 1:].copy()
    else:
        out["means"] = means.copy()
    cov = np.asarray(covariances, dtype=float)
    if ctype in ("full", "tied"):
        covs = cov.reshape(K, d, d) if ctype == "full" else cov.reshape(d, d)
        U = np.linalg.cholesky(np.linalg.inv(covs))
        out["prec_chol_logdiag"] = np.log(np.diagonal(U, axis1=-2, axis2=-1)).copy()
        if d > 1:
            rows, cols = _tril(d)
            out["prec_chol_offdiag"] = U[..., rows, cols].copy()
    else:
        out["log_precision"] = -np.log(cov.reshape((K, d) if ctype == "diag" else (K,)))
    return out


def params_from_draws(structure, draws):
    """Mixture parameters from (a batch of) draws of the free variables.

    Parameters
    ----------
    structure : ModelStructure
    draws : dict of str -> ndarray
        Free variables with any leading batch shape ``B`` (e.g. (chain, draw)).

    Returns
    -------
    weights : ndarray of shape (*B, K)
    means : ndarray of shape (*B, K, d)
    prec_chol : ndarray of shape (*B, K, d, d)
        Lower Cholesky factors of the component precisions (tied: repeated).
    """
    K, d, ctype = structure.n_components, structure.n_features, structure.covariance_type
    if structure.ordered:
        first_raw = np.asarray(draws["means_first"], dtype=float)
        batch = first_raw.shape[:-1]
        first = np.concatenate(
            [first_raw[..., :1], first_raw[..., :1] + np.cumsum(np.exp(first_raw[..., 1:]), -1)],
            axis=-1,
        )
        if d > 1:
            means = np.concatenate([first[..., None], draws["means_rest"]], axis=-1)
        else:
            means = first[..., None]
    else:
        means = np.asarray(draws["means"], dtype=float)
        batch = means.shape[:-2]
    if K > 1:
        eta = np.asarray(draws["weights_logratio"], dtype=float)
        eta = np.concatenate([eta, np.zeros((*batch, 1))], axis=-1)
        eta -= eta.max(axis=-1, keepdims=True)
        weights = np.exp(eta)
        weights /= weights.sum(axis=-1, keepdims=True)
    else:
        weights = np.ones((*batch, 1))
    if ctype in ("full", "tied"):
        logdiag = np.asarray(draws["prec_chol_logdiag"], dtype=float)
        U = np.zeros((*logdiag.shape, d))
        idx = np.arange(d)
        U[..., idx, idx] = np.exp(logdiag)
        if d > 1:
            rows, cols = _tril(d)
            U[..., rows, cols] = draws["prec_chol_offdiag"]
        if ctype == "tied":
            U = np.broadcast_to(U[..., None, :, :], (*batch, K, d, d)).copy()
    else:
        t = np.asarray(draws["log_precision"], dtype=float)
        sd_inv = np.exp(0.5 * t)
        if ctype == "spherical":
            sd_inv = np.repeat(sd_inv[..., None], d, axis=-1)
        U = sd_inv[..., None] * np.eye(d)
    return weights, means, U


def covariances_from_prec_chol(prec_chol, covariance_type):
    """scikit-learn-shaped covariances from lower precision Cholesky factors.

    Parameters
    ----------
    prec_chol : ndarray of shape (*B, K, d, d)
    covariance_type : str

    Returns
    -------
    ndarray
        (*B, K, d, d) full, (*B, d, d) tied, (*B, K, d) diag, (*B, K) spherical.
    """
    if covariance_type in ("diag", "spherical"):
        var = 1.0 / np.diagonal(prec_chol, axis1=-2, axis2=-1) ** 2
        return var if covariance_type == "diag" else var[..., 0]
    U = prec_chol[..., :1, :, :] if covariance_type == "tied" else prec_chol
    d = U.shape[-1]
    # Sigma = (U U^T)^-1 = U^-T U^-1, with U^-1 from np.linalg.solve against the identity
    # (a general LU solve per matrix: the triangular structure is not exploited).
    U_inv = np.linalg.solve(U, np.broadcast_to(np.eye(d), U.shape))
    cov = np.swapaxes(U_inv, -1, -2) @ U_inv
    return cov[..., 0, :, :] if covariance_type == "tied" else cov


def component_log_density(X, weights, means, prec_chol):
    """``log weights_k + log N(x_n | mu_k, Sigma_k)`` for a batch of parameter draws.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    weights : ndarray of shape (S, K)
    means : ndarray of shape (S, K, d)
    prec_chol : ndarray of shape (S, K, d, d)
        Lower factors with ``Sigma_k^-1 = U U^T``.

    Returns
    -------
    ndarray of shape (S, n, K)
        Keep ``S * n * K * d`` moderate: callers pass chunks of draws and rows.
    """
    d = X.shape[1]
    # (U^T (x - mu))_e = sum_{f >= e} U_fe x_f - (U^T mu)_e, accumulated coordinate by
    # coordinate on (S, n, K) arrays: d (d + 1) / 2 fused passes, no (S, n, K, d) temporary
    # (which one einsum over the coordinates would need).
    maha = np.zeros((weights.shape[0], X.shape[0], weights.shape[1]))
    for e in range(d):
        mu_u = np.einsum("skf,skf->sk", means[:, :, e:], prec_chol[:, :, e:, e])
        z = np.broadcast_to(-mu_u[:, None, :], maha.shape).copy()
        for f in range(e, d):
            z += X[None, :, f, None] * prec_chol[:, None, :, f, e]
        z *= z
        maha += z
    half_logdet = np.sum(np.log(np.diagonal(prec_chol, axis1=-2, axis2=-1)), axis=-1)  # (S, K)
    with np.errstate(divide="ignore"):
        log_w = np.log(weights)
    maha *= -0.5
    maha += (log_w + half_logdet - 0.5 * d * LOG_2PI)[:, None, :]
    return maha
