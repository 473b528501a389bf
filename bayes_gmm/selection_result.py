"""The result of :func:`~bayes_gmm.select_model`: :class:`ModelSelection`, the table of
criteria over the grid (one row per cell, as R's ``mclust`` prints it), the winner, a
ranking and mclust's BIC plot.

The grid that fills the table is :mod:`bayes_gmm.selection`; this module only reads it.
"""

from __future__ import annotations

import pandas as pd

from bayes_gmm.structures import get_structure

__all__ = ["CRITERIA", "TABLE_COLUMNS", "ModelSelection", "check_criterion"]

#: The criteria ``select_model`` can choose by; all three are always in the table.
CRITERIA = ("bic", "aic", "icl")

#: The columns of :attr:`ModelSelection.table`, in order.
TABLE_COLUMNS = [
    "covariance_type",
    "n_components",
    "mclust",
    "log_likelihood",
    "n_parameters",
    "bic",
    "aic",
    "icl",
    "converged",
    "n_iter",
    "n_starts",
    "n_best",
    "best_start",
    "tol",
    "fit_time",
    "reason",
]


def check_criterion(criterion):
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}.")
    return criterion


class ModelSelection:
    """The result of :func:`select_model`: the criteria over the grid and the winner.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per fitted cell (covariance structure x number of components) with the
        columns ``covariance_type``, ``n_components``, ``mclust`` (mclust's name of the
        model), ``log_likelihood`` (of the data at the fitted parameters, also under a
        prior), ``n_parameters``, ``bic``, ``aic``, ``icl`` (lower is better),
        ``converged``, ``n_iter`` (EM iterations of the kept start, exploratory plus final),
        ``n_starts`` (starting points tried), ``n_best`` (how many of them reached the best
        objective), ``best_start`` (which start won: ``"kmeans"``, ``"kmeans++"``, ``"hc"``
        (mclust's hierarchical start), ``"split"`` of the K - 1 solution, or
        ``"from <structure>"``), ``tol`` (the tolerance the cell was run to), ``fit_time``
        (seconds on its thread; with several cores cells run at the same time, so these add
        up to more than the grid's time) and ``reason`` (why a cell failed or is doubtful;
        empty when all is well). A failed cell keeps its row, with NaN numbers and the
        reason.
    criterion : str
        The criterion the winner was chosen by.
    best_params : tuple (str, int) or None
        ``(covariance_type, n_components)`` of the winner; ``None`` if every cell failed.
    best_estimator : GaussianMixture or None
        The fitted winner.
    estimators : dict
        ``{(covariance_type, n_components): GaussianMixture}`` for every cell that fitted.
    n_samples, n_features : int
    collapsed : dict
        Maps each requested structure that was not fitted to the one that stands for it:
        a model named twice ("full" and "VVV"), and in one dimension every model with the
        same volume letter (mclust's "E" and "V", see :func:`select_model`).
    elapsed : float
        Seconds the grid took.
    """

    def __init__(
        self, table, criterion, estimators, n_samples, n_features, collapsed=None, elapsed=None
    ):
        self.table = table
        self.criterion = criterion
        self.estimators = estimators
        self.n_samples = n_samples
        self.n_features = n_features
        self.collapsed = dict(collapsed or {})
        self.elapsed = elapsed
        scores = table[criterion]
        if scores.notna().any():
            row = table.loc[scores.idxmin()]
            self.best_params = (str(row["covariance_type"]), int(row["n_components"]))
            self.best_estimator = estimators[self.best_params]
        else:
            self.best_params = None
            self.best_estimator = None

    @property
    def best_score(self):
        """The winner's criterion value (``nan`` if every cell failed)."""
        return float(self.table[self.criterion].min())

    def top(self, n=5, criterion=None):
        """The ``n`` best cells by ``criterion``, with the difference to the best.

        Parameters
        ----------
        n : int, default=5
        criterion : {"bic", "aic", "icl"}, default=None
            ``None``: the criterion the selection was made by.

        Returns
        -------
        pandas.DataFrame
            Indexed by rank (1 = best), columns ``covariance_type``, ``n_components``,
            ``mclust``, the criterion, ``delta_<criterion>`` (>= 0), ``log_likelihood``,
            ``n_parameters``, ``n_best``, ``n_starts`` and ``reason``. Failed cells are left
            out.
        """
        criterion = check_criterion(criterion or self.criterion)
        ok = self.table[self.table[criterion].notna()]
        rows = ok.sort_values(criterion, kind="stable").head(int(n))
        out = rows[["covariance_type", "n_components", "mclust", criterion]].copy()
        out[f"delta_{criterion}"] = rows[criterion] - rows[criterion].min()
        for col in ("log_likelihood", "n_parameters", "n_best", "n_starts", "reason"):
            out[col] = rows[col]
        out.index = pd.RangeIndex(1, len(out) + 1, name="rank")
        return out

    def best_posterior_params(self, criterion=None):
        """The best cell whose structure :class:`~bayes_gmm.BayesianGaussianMixture` can sample.

        It is :attr:`best_params` when the winner's structure has a posterior (see
        :attr:`bayes_gmm.structures.Structure.posterior_supported`), else the best of the
        other cells that have one.

        Parameters
        ----------
        criterion : {"bic", "aic", "icl"}, default=None
            ``None``: the criterion the selection was made by.

        Returns
        -------
        tuple (str, int) or None
            ``(covariance_type, n_components)``; ``None`` if no such cell was fitted.
        """
        criterion = check_criterion(criterion or self.criterion)
        table = self.table
        supported = table["covariance_type"].map(lambda t: get_structure(t).posterior_supported)
        ok = table[criterion].notna() & supported.astype(bool)
        if not ok.any():
            return None
        row = table.loc[table.loc[ok, criterion].idxmin()]
        return str(row["covariance_type"]), int(row["n_components"])

    @property
    def ranking(self):
        """The five best cells with the difference to the best (see :meth:`top`)."""
        return self.top(5)

    @property
    def failed(self):
        """Rows of the cells that could not be fitted, with the reason."""
        return self.table[self.table["bic"].isna()]

    def criterion_table(self, criterion=None):
        """The criterion as a K x covariance-structure grid (mclust's BIC table layout).

        Returns
        -------
        pandas.DataFrame of shape (n_components values, covariance types)
        """
        criterion = check_criterion(criterion or self.criterion)
        grid = self.table.pivot(index="n_components", columns="covariance_type", values=criterion)
        order = list(dict.fromkeys(self.table["covariance_type"]))
        return grid[order]

    def plot(self, criterion=None, ax=None):
        """Draw the criterion against K, one line per covariance structure (mclust's BIC plot).

        Failed cells are gaps in their line; the winner is circled.

        Parameters
        ----------
        criterion : {"bic", "aic", "icl"}, default=None
            ``None``: the criterion the selection was made by.
        ax : matplotlib.axes.Axes, default=None
            ``None`` draws on a new figure.

        Returns
        -------
        matplotlib.axes.Axes
        """
        import matplotlib.pyplot as plt

        criterion = check_criterion(criterion or self.criterion)
        if ax is None:  # constrained: the figure makes room for a legend beside the axes
            _, ax = plt.subplots(figsize=(7.6, 4.2), layout="constrained")
        markers = "osv^<>DPXph*d8"  # one per model, with 14 colours: 14 lines stay apart
        colors = plt.get_cmap("tab20").colors
        groups = self.table.groupby("covariance_type", sort=False)
        for i, (ctype, rows) in enumerate(groups):
            rows = rows.sort_values("n_components")
            mclust = rows["mclust"].iloc[0]
            label = ctype if ctype == mclust else f"{ctype} ({mclust})"
            ax.plot(
                rows["n_components"],
                rows[criterion],
                marker=markers[i % len(markers)],
                color=colors[i % len(colors)],
                label=label,
            )
        scores = self.table[criterion]
        if scores.notna().any():
            best = self.table.loc[scores.idxmin()]
            ax.plot(
                best["n_components"],
                best[criterion],
                "o",
                ms=14,
                mfc="none",
                mec="black",
                label=f"best: {best['covariance_type']}, K={best['n_components']}",
            )
        ax.set_xlabel("number of components K")
        ax.set_ylabel(f"{criterion.upper()} (lower is better)")
        ax.set_xticks(sorted(self.table["n_components"].unique()))
        if len(groups) > 6:  # mclust's 14 lines: a legend inside would hide some of them
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(fontsize="small")
        ax.set_title(f"Model selection by {criterion.upper()}")
        return ax

    def _summary_lines(self):
        n_cells = len(self.table)
        n_failed = int(self.table["bic"].isna().sum())
        lines = [
            f"ModelSelection: {n_cells} cells on {self.n_samples} x {self.n_features} data, "
            f"criterion {self.criterion.upper()} (lower is better), {n_failed} failed"
        ]
        if self.best_params is None:
            lines.append("no cell could be fitted; see .failed for the reasons")
        else:
            ctype, k = self.best_params
            row = self.ranking.iloc[0]
            mclust = "" if row["mclust"] == ctype else f" ({row['mclust']})"
            lines.append(
                f"best: covariance_type={ctype!r}{mclust}, n_components={k}, "
                f"{self.criterion}={row[self.criterion]:.3f}"
            )
        if self.collapsed:
            lines.append(
                ("1-D data: " if self.n_features == 1 else "")
                + ", ".join(f"{a!r} is the same model as {b!r}" for a, b in self.collapsed.items())
                + " (not fitted twice)"
            )
        return lines

    def __repr__(self):
        lines = self._summary_lines()
        if self.best_params is not None:
            with pd.option_context("display.width", 120, "display.max_columns", 20):
                lines.append(self.ranking.to_string(float_format=lambda v: f"{v:.3f}"))
        return "\n".join(lines)

    def _repr_html_(self):
        import html

        parts = [f"<p>{html.escape(line)}</p>" for line in self._summary_lines()]
        if self.best_params is not None:
            parts.append(self.ranking.to_html(float_format=lambda v: f"{v:.3f}"))
        return "<div>" + "".join(parts) + "</div>"
