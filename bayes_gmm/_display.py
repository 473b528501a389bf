"""How posterior results are shown: the summary table's rows and rounding.

Pure functions of the posterior draws, shared by ``BayesianGaussianMixture.summary`` (and
so by the command line's ``summary.csv``) and the notebooks.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["format_summary", "is_mirrored_entry", "posterior_summary", "round_by_sd"]

# Columns ArviZ's summary gives and how each is rounded (see round_by_sd).
_BY_SD = ("mean", "sd", "median", "mad")
_ESS = ("ess_bulk", "ess_tail", "ess_mean", "ess_median", "min_ss")
_MCSE = ("mcse_mean", "mcse_sd", "mcse_median")


def _symmetric_dims(da):
    """The last two dims of ``da`` if they index the same labels (a covariance matrix)."""
    if da.ndim < 2:
        return None
    a, b = da.dims[-2:]
    if a in ("chain", "draw") or b in ("chain", "draw"):
        return None
    if da.sizes[a] != da.sizes[b] or a not in da.coords or b not in da.coords:
        return None
    if not np.array_equal(da.coords[a].values, da.coords[b].values):
        return None
    return a, b


def _label(name, coords):
    # ArviZ's row labels: "var[c1, c2, ...]" from the coordinate values.
    return f"{name}[{', '.join(str(c) for c in coords)}]" if coords else name


def _mirrored_labels(posterior):
    """Row labels of the entries below the diagonal of every symmetric (covariance) variable."""
    labels = []
    for name, da in posterior.data_vars.items():
        dims = _symmetric_dims(da)
        if dims is None:
            continue
        other = [d for d in da.dims if d not in ("chain", "draw")]
        values = [da.coords[d].values if d in da.coords else np.arange(da.sizes[d]) for d in other]
        for idx in np.ndindex(*(len(v) for v in values)):
            if idx[-2] > idx[-1]:
                labels.append(_label(name, [values[j][i] for j, i in enumerate(idx)]))
    return labels


def is_mirrored_entry(name):
    """True for ``"covariances[k,i,j]"`` with ``i > j``: the mirror of an entry above the diagonal.

    For the positional names of the diagnostics (``"covariances[2,1,0]"``); a covariance
    matrix is symmetric, so listing both triangles names each entry twice.
    """
    match = re.fullmatch(r"covariances\[([\d,\s]+)\]", name)
    if match is None:
        return False
    idx = [int(i) for i in match.group(1).split(",")]
    return len(idx) >= 2 and idx[-2] > idx[-1]


def _decimals_for(scale, digits=2):
    """Decimals that show ``scale`` to ``digits`` significant figures (0 for large scales)."""
    scale = np.abs(np.asarray(scale, dtype=float))
    with np.errstate(divide="ignore", invalid="ignore"):
        dec = digits - 1 - np.floor(np.log10(scale))
    dec = np.where(np.isfinite(dec), dec, 6)
    return np.clip(dec, 0, 12).astype(int)


def round_by_sd(table):
    """Round a summary as its uncertainty warrants.

    Per row, the sd is shown to two significant figures, and the mean, median and
    interval bounds to the same decimals (a value is not known better than its sd);
    ESS are whole numbers, r_hat has three decimals (its threshold is 1.01), Monte Carlo
    standard errors two significant figures.

    Parameters
    ----------
    table : DataFrame
        ArviZ's summary with raw numbers (``round_to="none"``).

    Returns
    -------
    DataFrame
        The same table, rounded, numbers kept as floats.
    """
    out = table.copy()
    if "sd" not in out.columns:
        return out.round(4)
    decimals = _decimals_for(out["sd"].to_numpy())
    interval = [c for c in out.columns if re.fullmatch(r"(eti|hdi)\d+_(lb|ub)", str(c))]
    for col in [c for c in out.columns if c in _BY_SD] + interval:
        values = out[col].to_numpy(dtype=float)
        out[col] = [round(float(v), int(d)) for v, d in zip(values, decimals, strict=True)]
    for col in [c for c in out.columns if c in _MCSE]:
        values = out[col].to_numpy(dtype=float)
        dec = _decimals_for(values)
        out[col] = [round(float(v), int(d)) for v, d in zip(values, dec, strict=True)]
    for col in [c for c in out.columns if c in _ESS]:
        values = np.floor(out[col].to_numpy(dtype=float))
        out[col] = values.astype(int) if np.isfinite(values).all() else values
    if "r_hat" in out.columns:
        out["r_hat"] = out["r_hat"].astype(float).round(3)
    return out


def posterior_summary(posterior, ci_prob=0.94, round_to="auto", **kwargs):
    """ArviZ's summary of the posterior, each covariance entry once, rounded by the sd.

    Parameters
    ----------
    posterior : xarray.Dataset
        Variables with dims ``(chain, draw, ...)``.
    ci_prob : float, default=0.94
        Mass of the credible interval.
    round_to : "auto", "none" or int, default="auto"
        ``"auto"``: :func:`round_by_sd`; ``"none"``: raw numbers; an int: that many decimals.
    **kwargs
        Passed to :func:`arviz.summary` (e.g. ``kind``, ``ci_kind``).

    Returns
    -------
    DataFrame
        One row per scalar parameter; symmetric matrices (covariances) contribute their
        diagonal and upper triangle only.
    """
    import arviz_stats as az

    table = az.summary(posterior, ci_prob=ci_prob, round_to="none", **kwargs)
    mirrored = [label for label in _mirrored_labels(posterior) if label in table.index]
    table = table.drop(index=mirrored)
    if isinstance(round_to, str) and round_to.lower() == "none":
        return table
    if round_to == "auto":
        return round_by_sd(table)
    return table.astype(float).round(int(round_to))


def format_summary(table):
    """The summary as text cells, each number with its own decimals (no padding zeros).

    A float column prints every value with the most decimals any of them has
    (``47.000`` next to ``0.054``), which claims digits the rounding removed.
    """
    return table.astype(object).map(_number_text)


def _number_text(value):
    if isinstance(value, float):
        return np.format_float_positional(value, trim="-")
    return str(value)
