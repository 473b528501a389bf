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

    def _failures(self):
        """``(headline, rest)`` per failed check; the headline is what the verdict lists."""
        out = []
        if not self.max_rhat <= RHAT_MAX:
            out.append(
                (
                    f"r_hat {self.max_rhat:.3f} > {RHAT_MAX}",
                    f" for {_names(self.worst_rhat)}: the chains disagree. On a short run "
                    "this is common even when the posterior is right, so first rerun with "
                    "more tune and draws (e.g. twice as many) and check that r_hat falls; if "
                    "it stays high, the model may have too many components (an empty or "
                    "duplicated one): compare with fewer.",
                )
            )
        low_ess = min(self.min_ess_bulk, self.min_ess_tail)
        if not low_ess >= ESS_MIN:
            names = list(dict.fromkeys(self.worst_ess_bulk + self.worst_ess_tail))
            out.append(
                (
                    f"ESS {low_ess:.0f} < {ESS_MIN:.0f}",
                    f" (bulk min {self.min_ess_bulk:.0f}, tail min {self.min_ess_tail:.0f}) "
                    f"for {_names(names)}: the effective sample size is too small for reliable "
                    "intervals; increase draws (or chains).",
                )
            )
        if self.n_divergent > 0:
            out.append(
                (
                    f"{self.n_divergent} divergent transition(s)",
                    ": the sampler met curvature it could not follow, so the draws may be "
                    "biased. Increase target_accept (e.g. 0.95 or 0.99) and tune; persistent "
                    "divergences often mean a component with very few points (try fewer "
                    "components or a stronger prior).",
                )
            )
        low_bfmi = np.flatnonzero(~(self.bfmi >= BFMI_MIN))
        if low_bfmi.size:
            out.append(
                (
                    f"E-BFMI below {BFMI_MIN} in chain(s) {low_bfmi.tolist()}",
                    f" ({np.round(self.bfmi[low_bfmi], 2).tolist()}): the momentum "
                    "resampling explores the energy poorly. Increase tune; if it persists, "
                    "the posterior has heavy tails (a nearly empty component): try fewer "
                    "components.",
                )
            )
        if self.relabelled_share > RELABEL_MAX_SHARE:
            per_chain = (self.relabelled / max(self.n_draws, 1) * 100).round(1).tolist()
            out.append(
                (
                    f"{self.relabelled_share:.0%} of a chain's draws relabelled",
                    f" (per chain: {', '.join(f'{v:g}%' for v in per_chain)}) to match the EM "
                    "estimate. The relabelled draws are permuted back, so label-invariant "
                    "results (the density, score_samples, the log-likelihood, sorted weights) "
                    "are unaffected. Per-component results (weights[k], means[k], "
                    "memberships) are a problem only if the components overlap so much that "
                    "their labels are not identified: look at plot_trace_dist for chains that "
                    "jump between values. If they do, report label-invariant quantities, or "
                    "try fewer components, or relabel='ordered' when the first coordinate "
                    "separates the components.",
                )
            )
        return out

    def problems(self):
        """One message per failed check, saying what failed and what to do."""
        return [head + rest for head, rest in self._failures()]

    @property
    def ok(self):
        """True when every check passes."""
        return not self._failures()

    @property
    def verdict(self):
        """One line: ``'ok: ...'``, or ``'not trustworthy: '`` and the failed checks."""
        failures = self._failures()
        if not failures:
            return "ok: every check passes"
        return "not trustworthy: " + "; ".join(head for head, _ in failures)

    def _rows(self):
        """``(check, value, requirement, passed)`` per check, for the text and HTML tables."""
        bfmi_min = float(np.min(self.bfmi)) if self.bfmi.size else np.nan
        relabelled = ", ".join(str(int(v)) for v in self.relabelled) or "-"
        return [
            ("max r_hat", f"{self.max_rhat:.3f}", f"<= {RHAT_MAX}", self.max_rhat <= RHAT_MAX),
            (
                "min ESS bulk, tail",
                f"{self.min_ess_bulk:.0f}, {self.min_ess_tail:.0f}",
                f">= {ESS_MIN:.0f}",
                min(self.min_ess_bulk, self.min_ess_tail) >= ESS_MIN,
            ),
            ("divergences", str(self.n_divergent), "0", self.n_divergent == 0),
            (
                "min E-BFMI",
                f"{bfmi_min:.2f}",
                f">= {BFMI_MIN}",
                bool(np.all(self.bfmi >= BFMI_MIN)),
            ),
            (
                "relabelled draws",
                f"{relabelled} of {self.n_draws} per chain",
                f"<= {RELABEL_MAX_SHARE:.0%} per chain",
                self.relabelled_share <= RELABEL_MAX_SHARE,
            ),
        ]

    def to_frame(self):
        """The checks as a DataFrame: value, requirement and status per check."""
        import pandas as pd

        rows = self._rows()
        return pd.DataFrame(
            {
                "value": [r[1] for r in rows],
                "requirement": [r[2] for r in rows],
                "status": ["ok" if r[3] else "FAILED" for r in rows],
            },
            index=pd.Index([r[0] for r in rows], name="check"),
        )

    def _header(self):
        return f"Diagnostics of {self.relabelled.size} chain(s) x {self.n_draws} draws"

    def __str__(self):
        rows = self._rows()
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [self._header()]
        for check, value, need, passed in rows:
            lines.append(
                f"  {check:<{widths[0]}}  {value:<{widths[1]}}  "
                f"{'ok' if passed else 'FAILED':<6}  ({need})".rstrip()
            )
        lines.append(f"Verdict: {self.verdict}")
        lines += [f"- {problem}" for problem in self.problems()]
        return "\n".join(lines)

    def __repr__(self):
        return str(self)

    def _repr_html_(self):
        import html

        cell = 'style="text-align:left;padding:1px 10px 1px 0"'
        body = "".join(
            f"<tr><td {cell}>{html.escape(check)}</td><td {cell}>{html.escape(value)}</td>"
            f"<td {cell}>{'ok' if passed else '<b>FAILED</b>'}</td>"
            f"<td {cell}>{html.escape(need)}</td></tr>"
            for check, value, need, passed in self._rows()
        )
        problems = "".join(f"<li>{html.escape(p)}</li>" for p in self.problems())
        return (
            f"<div><p>{html.escape(self._header())}</p>"
            f'<table style="border-collapse:collapse;margin-left:0">{body}</table>'
            f"<p><b>Verdict: {html.escape(self.verdict)}</b></p>"
            + (f"<ul>{problems}</ul>" if problems else "")
            + "</div>"
        )


def _names(names):
    from bayes_gmm._display import is_mirrored_entry

    # A covariance matrix is symmetric: name each of its entries once.
    names = [name for name in names if not is_mirrored_entry(name)]
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
    import arviz_stats as az  # the statistics alone: `arviz` also loads its plots (1 s)

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
