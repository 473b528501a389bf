"""Online (stepwise) EM for data that arrive in batches (Cappé & Moulines, 2009).

The state is a running average ``s`` of the sufficient statistics per unit of sample
weight. Batch ``t`` (the first batch after the one that initialized is ``t = 1``)
computes its own statistics ``s_t`` at the current parameters (the E-step of
:mod:`bayes_gmm._blockstats`), and

    s <- (1 - rho_t) s + rho_t s_t,      rho_t = (learning_offset + t) ** -learning_decay,

then the M-step (:func:`bayes_gmm._gaussian.from_summaries`) reads ``n_seen * s``, where
``n_seen`` is the total weight seen so far. ``learning_decay`` in (0.5, 1] makes the
steps sum to infinity while their squares sum to a finite value, the condition under
which the iterates converge to a stationary point of the likelihood; a larger offset
damps the first steps. Under a prior the M-step is the MAP one with the data's weight
``n_seen``, so a component that sees few points in the first batches is held by the prior
instead of collapsing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bayes_gmm import _gaussian as g
from bayes_gmm._blockstats import block_statistics, scale_statistics
from bayes_gmm.structures import layout_of

__all__ = ["OnlineEM", "step_size"]


def step_size(t, learning_offset, learning_decay):
    """``rho_t = (learning_offset + t) ** -learning_decay``, the weight of batch ``t``."""
    return float((learning_offset + t) ** -learning_decay)


@dataclass
class OnlineEM:
    """Running sufficient statistics and the parameters they give (centered frame)."""

    center: np.ndarray
    ctype: str
    reg_covar: float
    prior: object  # CenteredPrior or None
    stats: g.SufficientStatistics
    n_seen: float
    n_steps: int = 0

    @classmethod
    def start(cls, X, w, center, params, ctype, reg_covar, prior):
        """The state after the initializing batch ``X``, at its fitted ``params``."""
        stats = block_statistics(X, w, center, *params, ctype)
        total = stats.total_weight
        return cls(center, ctype, reg_covar, prior, scale_statistics(stats, 1.0 / total), total)

    def step(self, X, w, params, learning_offset, learning_decay):
        """One stepwise-EM update from batch ``X``.

        Returns
        -------
        (weights, means, covariances) : the M-step from the updated running statistics
        batch_log_likelihood : float
            ``sum_i w_i log p(x_i)`` of the batch at the parameters before the update.
        """
        batch = block_statistics(X, w, self.center, *params, self.ctype)
        self.n_steps += 1
        rho = step_size(self.n_steps, learning_offset, learning_decay)
        per_weight = 1.0 / batch.total_weight
        s = self.stats
        s.weight = (1 - rho) * s.weight + rho * per_weight * batch.weight
        s.sum_x = (1 - rho) * s.sum_x + rho * per_weight * batch.sum_x
        s.sum_xx = (1 - rho) * s.sum_xx + rho * per_weight * batch.sum_xx
        s.log_likelihood = (1 - rho) * s.log_likelihood + rho * per_weight * batch.log_likelihood
        s.total_weight = 1.0
        self.n_seen += batch.total_weight
        scaled = scale_statistics(s, self.n_seen)
        old_means, old_covs = params[1], params[3]
        weights, means, covs = g.from_summaries(
            scaled, self.ctype, self.reg_covar, self.prior, previous=old_covs
        )
        empty = scaled.weight <= 1e-12 * scaled.total_weight
        if empty.any() and self.prior is None:  # 0 / 0: keep what the component had
            means[empty] = old_means[empty]
            if layout_of(self.ctype) != "tied":
                covs[empty] = old_covs[empty]
        return (weights, means, covs), batch.log_likelihood

    def permute(self, order):
        """Reorder the components of the running statistics (as the estimator sorts them)."""
        s = self.stats
        s.weight, s.sum_x = s.weight[order], s.sum_x[order]
        if layout_of(self.ctype) != "tied":
            s.sum_xx = s.sum_xx[order]
