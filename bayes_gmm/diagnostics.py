"""Convergence diagnostics of a relabelled mixture posterior, and the warnings they raise.

Stage 3 of the Bayesian pipeline. Thresholds follow Vehtari et al. (2021,
"Rank-normalization, folding, and localization: an improved R-hat"): r_hat
<= 1.01, bulk and tail ESS >= 400; E-BFMI >= 0.3 (Betancourt 2016); no
divergent transitions. A fifth check is specific to mixtures: if many draws
had to be relabelled away from the EM pivot, the chains visited other modes
(or the components overlap so much that their labels are not identified).
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np

__all__ = ["DiagnosticsReport", "SamplingWarning", "compute_diagnostics", "warn_if_untrustworthy"]

RHAT_MAX = 1.01
ESS_MIN = 400.0
BFMI_MIN = 0.3
RELABEL_MAX_SHARE = 0.05


class SamplingWarning(UserWarning):
    """The posterior draws should not be trusted as they are (see the message)."""


@dataclasses.dataclass(frozen=True)
class DiagnosticsReport:
    """Summary of one sampling run.

    Attributes
    ----------
    max_rhat, min_ess_bulk, min_ess_tail : float
        Worst values over all scalar parameters (weights, means, covariances).
    worst_rhat, worst_ess_bulk, worst_ess_tail : list of str
        The parameters that fail the corresponding check (up to ten each).
    n_divergent : int
    bfmi : ndarray of shape (chains,)
    relabelled : ndarray of shape (chains,)
        Number of draws per chain whose labels were permuted to match the pivot.
    n_draws : int
        Draws per chain.
    """

    max_rhat: float
    min_ess_bulk: float
    min_ess_tail: float
    worst_rhat: list
    worst_ess_bulk: list
    worst_ess_tail: list
    n_divergent: int
    bfmi: np.ndarray
    relabelled: np.ndarray
    n_draws: int

    @property
    def relabelled_share(self):
        """Largest share of relabelled draws in any chain."""
        if self.n_draws == 0 or self.relabelled.size == 0:
            return 0.0
        return float(np.max(self.relabelled) / self.n_draws)

    def problems(self):
        """One message per failed check, saying what failed and what to try."""
        out = []
        if not self.max_rhat <= RHAT_MAX:
            out.append(
                f"r_hat = {self.max_rhat:.3f} > {RHAT_MAX} for {_names(self.worst_rhat)}: the "
                "chains disagree. Run longer (increase tune and draws), or check whether the "
                "number of components is too large (an empty or duplicated component)."
            )
        low_ess = min(self.min_ess_bulk, self.min_ess_tail)
        if not low_ess >= ESS_MIN:
            names = list(dict.fromkeys(self.worst_ess_bulk + self.worst_ess_tail))
            out.append(
                f"effective sample size {low_ess:.0f} < {ESS_MIN:.0f} (bulk min "
                f"{self.min_ess_bulk:.0f}, tail min {self.min_ess_tail:.0f}) for "
                f"{_names(names)}: increase draws (or chains) so the intervals are reliable."
            )
        if self.n_divergent > 0:
            out.append(
                f"{self.n_divergent} divergent transition(s): the sampler met curvature it "
                "could not follow, so the draws may be biased. Increase target_accept (e.g. "
                "0.95 or 0.99) and tune; persistent divergences often mean a component with "
                "very few points (try fewer components or a stronger prior)."
            )
        low_bfmi = np.flatnonzero(~(self.bfmi >= BFMI_MIN))
        if low_bfmi.size:
            out.append(
                f"E-BFMI below {BFMI_MIN} in chain(s) {low_bfmi.tolist()} "
                f"({np.round(self.bfmi[low_bfmi], 2).tolist()}): the momentum resampling "
                "explores the energy poorly. Increase tune; if it persists, the posterior "
                "has heavy tails (a nearly empty component): try fewer components."
            )
        if self.relabelled_share > RELABEL_MAX_SHARE:
            per_chain = (self.relabelled / max(self.n_draws, 1) * 100).round(1).tolist()
            out.append(
                f"{per_chain} % of the draws per chain had to be relabelled to match the EM "
                "estimate: the components' labels are not well identified (overlapping "
                "components or another mode). Treat per-component summaries with care; try "
                "fewer components, or relabel='ordered' when the first coordinate separates "
                "the components."
            )
        return out

    @property
    def ok(self):
        """True when every check passes."""
        return not self.problems()

    @property
    def verdict(self):
        """'ok' and the thresholds met, or a one-line list of what failed."""
        problems = self.problems()
        if not problems:
            return (
                f"ok: all r_hat <= {RHAT_MAX}, ESS >= {ESS_MIN:.0f}, no divergences, "
                f"E-BFMI >= {BFMI_MIN}, at most {RELABEL_MAX_SHARE:.0%} of the draws of any "
                "chain relabelled"
            )
        return "not trustworthy: " + "; ".join(p.split(":")[0] for p in problems)

    def to_frame(self):
        """The report as a one-column pandas DataFrame (for display)."""
        import pandas as pd

        rows = {
            "max r_hat": round(self.max_rhat, 4),
            "min ESS bulk": round(self.min_ess_bulk, 1),
            "min ESS tail": round(self.min_ess_tail, 1),
            "divergences": self.n_divergent,
            "min E-BFMI": round(float(np.min(self.bfmi)), 3) if self.bfmi.size else np.nan,
            "relabelled draws per chain": self.relabelled.tolist(),
            "verdict": self.verdict,
        }
        return pd.DataFrame({"value": pd.Series(rows, dtype=object)})

    def __repr__(self):
        return "DiagnosticsReport\n" + self.to_frame().to_string(header=False)

    def _repr_html_(self):
        return self.to_frame()._repr_html_()


def _names(names):
    return ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")


def _flat_stat(ds):
    """{"name[i,j]": value} for every scalar element of a per-variable statistic."""
    out = {}
    for name, da in ds.data_vars.items():
        values = np.asarray(da.values, dtype=float)
        if values.ndim == 0:
            out[name] = float(values)
            continue
        for idx in np.ndindex(values.shape):
            out[f"{name}[{','.join(map(str, idx))}]"] = float(values[idx])
    return out


def compute_diagnostics(posterior, sample_stats, relabelled):
    """Diagnostics of relabelled draws.

    Parameters
    ----------
    posterior : xarray.Dataset
        Variables with dims (chain, draw, ...): the relabelled weights, means
        and covariances.
    sample_stats : xarray.Dataset
        The sampler's statistics (``diverging``, ``energy``).
    relabelled : ndarray of shape (chains,)

    Returns
    -------
    DiagnosticsReport
    """
    import arviz as az

    n_chains, n_draws = posterior.sizes["chain"], posterior.sizes["draw"]
    # A single draw (or chain) has no between/within variance: report the worst value.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        rhat = _flat_stat(az.rhat(posterior))
        ess_bulk = _flat_stat(az.ess(posterior, method="bulk"))
        ess_tail = _flat_stat(az.ess(posterior, method="tail"))
    # Parameters that are constant by construction (the weight of a single component)
    # have undefined r_hat; they are not evidence of non-convergence.
    constant = {
        k
        for k, v in _flat_stat(posterior.std(("chain", "draw"))).items()
        if v == 0 or not np.isfinite(v)
    }

    def clean(stat, bad_if_nan):
        return {
            k: (bad_if_nan if not np.isfinite(v) else v)
            for k, v in stat.items()
            if k not in constant
        }

    rhat = clean(rhat, np.inf)
    ess_bulk = clean(ess_bulk, 0.0)
    ess_tail = clean(ess_tail, 0.0)
    diverging = sample_stats.get("diverging")
    n_div = int(np.asarray(diverging).sum()) if diverging is not None else 0
    energy = sample_stats.get("energy")
    if energy is not None and n_draws > 2:
        e = np.asarray(energy, dtype=float)
        bfmi = np.sum(np.diff(e, axis=1) ** 2, axis=1) / np.sum(
            (e - e.mean(axis=1, keepdims=True)) ** 2, axis=1
        )
    else:
        bfmi = np.full(n_chains, np.nan)

    def worst(stat, fails):
        bad = sorted((k for k, v in stat.items() if fails(v)), key=stat.get)
        return bad

    return DiagnosticsReport(
        max_rhat=max(rhat.values(), default=1.0),
        min_ess_bulk=min(ess_bulk.values(), default=float(n_chains * n_draws)),
        min_ess_tail=min(ess_tail.values(), default=float(n_chains * n_draws)),
        worst_rhat=worst(rhat, lambda v: not v <= RHAT_MAX)[::-1][:10],
        worst_ess_bulk=worst(ess_bulk, lambda v: not v >= ESS_MIN)[:10],
        worst_ess_tail=worst(ess_tail, lambda v: not v >= ESS_MIN)[:10],
        n_divergent=n_div,
        bfmi=np.asarray(bfmi, dtype=float),
        relabelled=np.asarray(relabelled, dtype=int),
        n_draws=int(n_draws),
    )


def warn_if_untrustworthy(report, stacklevel=3):
    """Emit one :class:`SamplingWarning` per failed check of ``report``."""
    for message in report.problems():
        warnings.warn(message, SamplingWarning, stacklevel=stacklevel)
