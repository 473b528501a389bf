"""EM for several starts of the same mixture at once, on the same (small) data.

On small data (a few thousand rows) one EM iteration of :class:`~bayes_gmm.GaussianMixture`
costs mostly the fixed overhead of its few dozen numpy calls, not arithmetic. A
model-selection grid runs hundreds of starts of thousands of iterations, so that overhead is
its running time. Here the R starts of one (K, covariance_type) are stacked along the
component axis: the E-step of all of them is one matrix product of R K natural parameter
vectors with the features, and the M-step is one vectorized update, so an iteration costs
about what one start's costs.

The semantics are those of ``GaussianMixture._run_em`` (same inputs, same convergence rule,
same objective, same M-step), so a batched start ends at the parameters, objective and
iteration count that ``GaussianMixture(...).fit`` reaches from the same initial parameters
(up to rounding: the stacked matrix products may add in a different order). The rare
degenerate cases (a component losing its weight, a covariance that is not numerically
positive definite, a singular maximum-likelihood covariance) are not reproduced here: such a
start is dropped from the batch and flagged, for the caller to run through
``GaussianMixture`` itself, which handles and reports them.

All ``(R * K, n)`` temporaries are held at once (no chunking over rows): this is meant for
small data, see :func:`fits_in_batch`.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm.em import _Run, held_by_regularization

__all__ = ["batched_em", "fit_estimators", "fits_in_batch"]

#: Largest number of float64 elements in a batch's temporaries (~32 MB).
MAX_BATCH_ELEMENTS = 2**22


def fits_in_batch(n_samples, n_starts, n_components, n_features, covariance_type):
    """Whether a batch of ``n_starts`` runs keeps its temporaries below ``MAX_BATCH_ELEMENTS``.

    The temporaries are the (R K, n) log-densities and responsibilities, the (n, m)
    features and, for "tied", the (R, n, d) whitened rows.
    """
    per_row = n_starts * n_components + g.feature_width(n_features, covariance_type)
    if covariance_type == "tied":
        per_row += n_starts * n_features
    return n_samples * per_row <= MAX_BATCH_ELEMENTS


def _per_start_chol(covs, ctype):
    """Precision factors of (A, ...) stacked covariances, and (A,) which needed a repair."""
    A = covs.shape[0]
    bad = np.zeros(A, dtype=bool)
    if ctype == "tied":
        # (A, d, d) tied matrices are factored exactly like A "full" components.
        prec_chol, covs, repaired = g.precision_cholesky(covs, "full")
        bad[[k for k, _ in repaired]] = True
        return prec_chol, covs, bad
    K = covs.shape[1]
    flat = covs.reshape((A * K, *covs.shape[2:]))
    prec_chol, flat, repaired = g.precision_cholesky(flat, ctype)
    bad[[k // K for k, _ in repaired]] = True
    return prec_chol.reshape(covs.shape), flat.reshape(covs.shape), bad


def _natural_parameters(means, prec_chol, ctype):
    """``eta`` (A, K, m) and ``const`` (A, K) of all starts' components."""
    if ctype == "tied":  # one shared precision per start: natural_parameters takes the batch
        return g.natural_parameters(means, prec_chol, ctype)
    A, K, d = means.shape
    eta, const = g.natural_parameters(
        means.reshape(A * K, d), prec_chol.reshape((A * K, *prec_chol.shape[2:])), ctype
    )
    return eta.reshape(A, K, -1), const.reshape(A, K)


def _e_step(feats, w, weights, means, prec_chol, ctype, tied_moment):
    """Log-likelihood (A,) and stacked sufficient statistics of all starts.

    ``w`` is None for unit weights (as in ``em._e_step_block``).
    """
    A, K, d = means.shape
    eta, const = _natural_parameters(means, prec_chol, ctype)
    const = const + np.log(weights)  # log(0) = -inf is allowed (see batched_em)
    log_prob = g.linear_log_prob(feats, eta, const, ctype, prec_chol)
    log_norm, resp = g.normalize(log_prob, axis=1)  # per start
    log_likelihood = log_norm.sum(axis=1) if w is None else log_norm @ w
    stats = g.summarize(feats, w, resp.reshape(A * K, -1), ctype, d)
    return log_likelihood, g.finish_moments(stats, ctype, tied_moment)


def _m_step(stats, A, K, ctype, reg_covar, prior):
    """``g.from_summaries`` for the A starts at once (their statistics stacked as A K rows)."""
    batched = g.SufficientStatistics(
        stats.weight.reshape(A, K),
        stats.sum_x.reshape(A, K, -1),
        stats.sum_xx if ctype == "tied" else stats.sum_xx.reshape((A, K, *stats.sum_xx.shape[1:])),
        stats.total_weight,
        0.0,
    )
    return g.from_summaries(batched, ctype, reg_covar, prior)


def _singular(covs, ctype, reg_covar, data_scale):
    """(A,) starts with a covariance held positive definite only by ``reg_covar``."""
    singular = held_by_regularization(covs, ctype, reg_covar, data_scale)
    return singular.reshape(covs.shape[0], -1).any(axis=1)


def batched_em(
    X,
    sample_weight,
    covariance_type,
    weights,
    means,
    covariances,
    *,
    tol,
    max_iter,
    reg_covar=1e-6,
    prior=None,
    log_prior=None,
):
    """Run EM from R starts of the same mixture at once.

    Each start follows ``GaussianMixture._run_em``: the objective is evaluated at the
    current parameters, the start stops when it changed by less than ``tol`` times the
    total weight, or after ``max_iter`` M-steps; finished starts leave the batch.

    Parameters
    ----------
    X : ndarray of shape (n, d)
    sample_weight : ndarray of shape (n,)
    covariance_type : {"full", "tied", "diag", "spherical"}
    weights : ndarray of shape (R, K)
    means : ndarray of shape (R, K, d)
        Centered by the weighted data mean ``sample_weight @ X / sample_weight.sum()``.
    covariances : ndarray of shape (R, ...)
        One start's covariances per row: (R, K, d, d) full, (R, d, d) tied, (R, K, d) diag,
        (R, K) spherical.
    tol : float
        Per unit of sample weight, as ``GaussianMixture``'s ``tol``.
    max_iter : int or array-like of int of shape (R,)
        Maximum number of M-steps, per start if an array.
    reg_covar : float, default=1e-6
        Added to the covariance diagonals when ``prior`` is None.
    prior : bayes_gmm._gaussian.CenteredPrior or None, default=None
        MAP estimation under this prior (centered frame).
    log_prior : callable or None, default=None
        ``log_prior(weights, means, covariances) -> float`` for one start (centered
        frame); required with ``prior``, added to the objective.

    Returns
    -------
    list of bayes_gmm.em._Run or None
        One per start, in order, as ``GaussianMixture._run_em`` returns it; None for a
        start that hit a case this module does not reproduce (a repaired covariance, an
        emptied component, a covariance held only by ``reg_covar``), which the caller
        must rerun through ``GaussianMixture`` so that it warns as usual.
    """
    ctype = covariance_type
    X = np.asarray(X, dtype=float)
    w = np.asarray(sample_weight, dtype=float)
    R, K = np.shape(weights)
    center = w @ X / w.sum()
    feats = g.features(X - center, ctype)
    unit = bool(np.all(w == 1.0))
    tied_moment = g.weighted_second_moment(feats, w) if ctype == "tied" else None
    tol_abs = tol * w.sum()
    data_scale = float(np.max(np.var(X, axis=0))) or 1.0
    max_iters = np.broadcast_to(np.asarray(max_iter, dtype=int), (R,))

    results = [None] * R
    history = np.empty((R, int(max_iters.max(initial=0)) + 1))
    # Row a of the arrays below is start active[a]; rows leave when their start finishes.
    active = np.arange(R)
    limit = max_iters.copy()
    weights = np.array(weights, dtype=float)
    means = np.array(means, dtype=float)
    prec_chol, covs, bad = _per_start_chol(np.array(covariances, dtype=float), ctype)
    previous = np.full(R, -np.inf)
    # One errstate for the whole run (it costs as much as a small numpy call): a zero
    # weight's log is -inf, as in em._e_step.
    with np.errstate(divide="ignore"):
        for iteration in range(history.shape[1]):
            log_lik, stats = _e_step(
                feats, None if unit else w, weights, means, prec_chol, ctype, tied_moment
            )
            objective = log_lik
            if prior is not None:
                objective = log_lik + np.array(
                    [log_prior(weights[a], means[a], covs[a]) for a in range(len(active))]
                )
            history[active, iteration] = objective
            converged = np.abs(objective - previous) < tol_abs
            # Repaired covariances: GaussianMixture warns, so the caller reruns those starts.
            done = converged | (iteration >= limit) | bad
            if not done.any():
                previous = objective
            else:
                finished = np.flatnonzero(done)
                degenerate = bad.copy()
                if prior is None:
                    degenerate[finished] |= _singular(covs[finished], ctype, reg_covar, data_scale)
                for a in finished[~degenerate[finished]]:
                    results[active[a]] = _Run(
                        weights[a],
                        means[a],
                        covs[a],
                        prec_chol[a],
                        objective=float(objective[a]),
                        history=history[active[a], : iteration + 1].tolist(),
                        converged=bool(converged[a]),
                        n_iter=iteration,
                    )
                go_on = ~done
                if not go_on.any():
                    break
                active, weights, means = active[go_on], weights[go_on], means[go_on]
                previous, limit = objective[go_on], limit[go_on]
                # The starts that go on keep their rows of the stacked statistics.
                stats_rows = (np.flatnonzero(go_on)[:, None] * K + np.arange(K)).ravel()
                stats.weight, stats.sum_x = stats.weight[stats_rows], stats.sum_x[stats_rows]
                if ctype != "tied":
                    stats.sum_xx = stats.sum_xx[stats_rows]
            weights, means, covs = _m_step(stats, len(active), K, ctype, reg_covar, prior)
            prec_chol, covs, bad = _per_start_chol(covs, ctype)
            if prior is None:  # em.py freezes emptied components; left to GaussianMixture
                emptied = stats.weight <= 1e-12 * stats.total_weight
                bad |= emptied.reshape(-1, K).any(axis=1)
    return results


def fit_estimators(estimators, X, sample_weight):
    """Fit GaussianMixture estimators of the same model together, as their ``fit`` would.

    The estimators must share ``n_components``, ``covariance_type``, ``tol``,
    ``reg_covar`` and ``prior``, and either all have explicit ``weights_init``,
    ``means_init`` and ``precisions_init`` or all be fitted and have ``warm_start=True``
    (``max_iter`` may differ). Warnings are not emitted: ``ConvergenceWarning`` shows in
    ``converged_``.

    Parameters
    ----------
    estimators : list of GaussianMixture
    X : ndarray of shape (n_samples, n_features)
        Validated float data (no feature names).
    sample_weight : ndarray of shape (n_samples,)

    Returns
    -------
    list of bool
        Per estimator: True when it was fitted here; False when its initial parameters
        are invalid or its run was degenerate, in which case it is left untouched and the
        caller must call its own ``fit`` (which raises or warns as usual).
    """
    n, d = X.shape
    first = estimators[0]
    ctype, K = first.covariance_type, first.n_components
    w = sample_weight
    center = w @ X / w.sum()
    starts, index = [], []
    for i, est in enumerate(estimators):
        if est.warm_start and hasattr(est, "converged_"):
            starts.append((est.weights_, est.means_ - center, est.covariances_))
            index.append(i)
            continue
        try:
            inits = est._check_parameters(n, d)
        except (TypeError, ValueError):
            continue
        if len(inits) == 3:
            starts.append((inits["weights"], inits["means"] - center, inits["covariances"]))
            index.append(i)
    ok = [False] * len(estimators)
    if not starts:
        return ok
    resolved, prior, log_prior = None, None, None
    if first.prior is not None:
        resolved = first.prior.resolve(X, K, ctype, sample_weight=w)
        prior = g.CenteredPrior.from_resolved(resolved, center)

        def log_prior(weights, means, covariances):
            return resolved.log_density(weights, means + center, covariances)

    weights, means, covs = (np.stack(part) for part in zip(*starts, strict=True))
    results = batched_em(
        X,
        w,
        ctype,
        weights,
        means,
        covs,
        tol=first.tol,
        max_iter=[estimators[i].max_iter for i in index],
        reg_covar=first.reg_covar,
        prior=prior,
        log_prior=log_prior,
    )
    total_weight = float(w.sum())
    for i, res in zip(index, results, strict=True):
        if res is None:
            continue
        est = estimators[i]
        # What est.fit sets besides _store's attributes.
        est.n_features_in_ = d
        if hasattr(est, "feature_names_in_"):
            del est.feature_names_in_
        est.prior_ = resolved
        est._store(res, center, [res.objective], total_weight)
        ok[i] = True
    return ok
