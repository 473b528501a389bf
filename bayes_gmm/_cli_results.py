"""What the command line writes into its results folder: tables, figures and a README.

:func:`save_selection_outputs` writes the EM grid (``selection.csv``, ``selection.png``);
:func:`write_posterior_outputs` the posterior, its summary, the memberships, the
diagnostics, the figures and ``README.txt``, which says what each file holds.
"""

from __future__ import annotations

from bayes_gmm._cli_report import version


def save_selection_outputs(selection, criterion, folder):
    import matplotlib.pyplot as plt

    from bayes_gmm import plots

    selection.table.to_csv(folder / "selection.csv", index=False)
    if len(selection.table) < 4:  # a handful of cells: nothing to zoom into
        fig, ax = plt.subplots(figsize=(6.4, 4.4), layout="constrained")
        plots.plot_selection(selection, criterion=criterion, ax=ax)
    else:
        # The whole grid, and a zoom on the competitive models (poor ones squash the scale).
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.4), layout="constrained")
        plots.plot_selection(selection, criterion=criterion, ax=left)
        plots.plot_selection(selection, criterion=criterion, ax=right, zoom=True)
    fig.savefig(folder / "selection.png", dpi=110)
    plt.close(fig)


def write_posterior_outputs(model, frame, folder, rep, command="fit"):
    import matplotlib.pyplot as plt

    from bayes_gmm import plots

    X = frame.to_numpy()
    model.save(folder / "posterior.zarr")
    summary = model.summary()
    summary.to_csv(folder / "summary.csv")
    # Posterior memberships once, for the table and both figures.
    mem = model.membership(X, prob=0.9)
    membership_table(model, frame, mem=mem).to_csv(folder / "membership.csv", index=False)
    diag = model.diagnostics()
    (folder / "diagnostics.txt").write_text(diagnostics_text(diag) + "\n")

    figures = {}
    units = frame.attrs.get("units")  # known for the demo's data
    # With more than two features, show the pair along which the components separate best.
    pair = plots.separating_pair(model) if X.shape[1] > 2 else (0, 1)
    if X.shape[1] == 1:
        figures["density.png"] = lambda: plots.plot_density(model, frame, units=units)
    else:
        figures["clusters.png"] = lambda: plots.plot_clusters(
            model, frame, columns=pair, proba=mem["mean"].to_numpy(), units=units
        )
    figures["uncertainty.png"] = lambda: plots.plot_uncertainty(
        model, frame, columns=pair, proba=mem, units=units
    )
    figures["trace.png"] = lambda: plots.plot_trace_dist(model)
    figures["rank.png"] = lambda: plots.plot_rank(model)
    figures["forest.png"] = lambda: plots.plot_forest(model)
    for name, draw in figures.items():
        rep.progress(f"figure {name}")
        fig = plots.figure_of(draw())
        fig.savefig(folder / name, dpi=110, bbox_inches="tight")
        plt.close(fig)
    (folder / "README.txt").write_text(_results_readme(command, figures))
    return summary, diag


def membership_table(model, frame, prob=0.9, mem=None):
    """Per row: the data, the most likely component, its posterior mean probability and interval.

    Parameters
    ----------
    model : fitted BayesianGaussianMixture
    frame : DataFrame of shape (n_rows, n_features)
    prob : float, default=0.9
        Mass of the credible interval.
    mem : xarray.Dataset, optional
        ``model.membership(frame, prob)`` if already computed; default: computed here.

    Returns
    -------
    DataFrame with the data columns and ``component``, ``mean_probability``,
    ``lower_<pct>``, ``upper_<pct>`` (``pct`` = ``prob`` in percent), as written to
    ``membership.csv``. The mean is the posterior mean of the membership probability
    (``predict_proba``); the bounds are the equal-tailed interval of the same probability.
    Near 0 or 1 its draws are skewed, and a mean may then lie just outside that interval.
    """
    best = model.most_likely_component(frame, prob=prob, membership=mem)
    pct = round(prob * 100)
    best = best.rename(
        columns={
            "probability": "mean_probability",
            "lower": f"lower_{pct}",
            "upper": f"upper_{pct}",
        }
    )
    # By position: the table is built from this very frame, whatever its index holds.
    return frame.assign(**{name: best[name].to_numpy() for name in best.columns})


_RESULTS_README = """\
Results of bayes-gmm {command} ({version}).

selection.csv    the EM grid: one row per (covariance_type, n_components) cell, with its
                 log-likelihood, number of parameters, BIC, AIC, ICL (lower is better),
                 convergence, and the reason a cell failed (empty when it did not)
selection.png    the criterion against K, one line per structure, the winner circled
posterior.zarr   the posterior draws (ArviZ DataTree); BayesianGaussianMixture.load() rebuilds
                 the model
summary.csv      per parameter: posterior mean, sd, the 94% equal-tailed interval (eti94_lb,
                 eti94_ub), bulk and tail effective sample sizes, r_hat and Monte Carlo
                 standard errors; numbers rounded from the sd; each covariance entry once
                 (diagonal and upper triangle)
membership.csv   per data row: the data, the most likely component, the posterior mean of its
                 membership probability (mean_probability, as predict_proba gives) and the
                 equal-tailed 90% interval of that probability (lower_90, upper_90). Near 0 or
                 1 the draws are skewed, so a mean can lie slightly outside its interval.
diagnostics.txt  the convergence checks, the verdict, and what to do about any failed check
{figures}
"""


_FIGURE_README = {
    "clusters.png": "the data, EM ellipses and ellipses of posterior draws, per component",
    "density.png": "the data's histogram, the EM density and the posterior's 90% band",
    "uncertainty.png": "each point's membership uncertainty (1 - largest probability)",
    "trace.png": "per parameter: the draws of each chain, and their densities",
    "rank.png": "rank plots per chain (uniform when the chains agree)",
    "forest.png": "posterior means and intervals of the parameters, per chain",
}


def _results_readme(command, figures):
    lines = [f"{name:<16} {_FIGURE_README[name]}" for name in figures if name in _FIGURE_README]
    return _RESULTS_README.format(command=command, version=version(), figures="\n".join(lines))


def diagnostics_text(diag):
    """The report: its checks, the verdict, then one line per failed check with what to do."""
    return str(diag)
