"""Predictions from posterior draws: memberships, densities, pointwise log-likelihood.

Stage 4 of the Bayesian pipeline (model -> sampling -> relabel -> diagnostics ->
**predictions** -> estimator). Every quantity is computed exactly for each draw and
then summarized over the draws, in blocks of rows and draws so memory stays bounded
whatever the number of rows.

The per-draw density is :func:`bayes_gmm.missing_density.observed_component_log_density`, the numpy
twin of the model's observed variable (a test pins them together); it is used here
because it evaluates thousands of draws at once without compiling anything. Rows with
NaN (``missing="em"``) get the density of their observed coordinates.
"""

from __future__ import annotations

import numpy as np

from bayes_gmm._gaussian import normalize
from bayes_gmm.missing_density import observed_component_log_density

__all__ = ["PosteriorDraws"]

# Budget for one temporary block of floats (~32 MB).
_BLOCK = 4_000_000


class PosteriorDraws:
    """Mixture parameters of ``S`` posterior draws (chains stacked).

    Parameters
    ----------
    weights : ndarray of shape (S, K)
    means : ndarray of shape (S, K, d)
    prec_chol : ndarray of shape (S, K, d, d)
        Lower Cholesky factors of the component precisions.
    """

    def __init__(self, weights, means, prec_chol):
        self.weights = np.asarray(weights, dtype=float)
        self.means = np.asarray(means, dtype=float)
        self.prec_chol = np.asarray(prec_chol, dtype=float)
        self.n_draws, self.n_components = self.weights.shape

    def _chunks(self, n_rows, all_draws=False):
        """Row and draw block sizes that keep one (draws, rows, K) block near _BLOCK."""
        S, K = self.n_draws, self.n_components
        if all_draws:
            rows = max(1, _BLOCK // (S * K))
            return rows, max(1, min(S, _BLOCK // (rows * K)))
        draws = max(1, min(S, 256))
        rows = max(1, _BLOCK // (draws * K))
        return min(rows, n_rows), draws

    def _blocks(self, X, all_draws=False):
        """Yield (row slice, draw slice, log_dens (s, n, K)) blocks."""
        rows, step = self._chunks(X.shape[0], all_draws)
        for r0 in range(0, X.shape[0], rows):
            rs = slice(r0, min(r0 + rows, X.shape[0]))
            for s0 in range(0, self.n_draws, step):
                ds = slice(s0, min(s0 + step, self.n_draws))
                yield (
                    rs,
                    ds,
                    observed_component_log_density(
                        X[rs], self.weights[ds], self.means[ds], self.prec_chol[ds]
                    ),
                )

    def predict_proba(self, X):
        """Posterior mean membership probabilities, (n, K)."""
        out = np.zeros((X.shape[0], self.n_components))
        for rs, _, ld in self._blocks(X):
            out[rs] += normalize(ld, axis=-1)[1].sum(axis=0)
        return out / self.n_draws

    def membership(self, X, prob):
        """Posterior mean and equal-tailed ``prob`` interval of every membership.

        Returns
        -------
        mean, lower, upper : ndarray of shape (n, K)
        """
        S, K = self.n_draws, self.n_components
        mean = np.empty((X.shape[0], K))
        lower, upper = np.empty_like(mean), np.empty_like(mean)
        q = [(1 - prob) / 2, (1 + prob) / 2]
        block = None
        for rs, ds, ld in self._blocks(X, all_draws=True):
            if ds.start == 0:
                block = np.empty((S, rs.stop - rs.start, K))
            block[ds] = normalize(ld, axis=-1)[1]
            if ds.stop == S:
                mean[rs] = block.mean(axis=0)
                lower[rs], upper[rs] = np.quantile(block, q, axis=0)
        return mean, lower, upper

    def pointwise_log_likelihood(self, X):
        """``log p(x_n | theta_s)`` for every draw, (S, n)."""
        out = np.empty((self.n_draws, X.shape[0]))
        for rs, ds, ld in self._blocks(X):
            out[ds, rs] = normalize(ld, axis=-1)[0]
        return out

    def score_samples(self, X):
        """Log posterior predictive density ``log mean_s p(x_n | theta_s)``, (n,)."""
        acc = np.full(X.shape[0], -np.inf)
        for rs, _, ld in self._blocks(X):
            block = normalize(normalize(ld, axis=-1)[0], axis=0)[0]
            acc[rs] = np.logaddexp(acc[rs], block)
        return acc - np.log(self.n_draws)
