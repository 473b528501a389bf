"""Figures for every stage: the selection grid, densities, clusters, uncertainty, diagnostics.

Every matplotlib function takes ``ax=None`` (a new figure) or an existing Axes, draws on
it and returns it. Models may be an EM :class:`~bayes_gmm.GaussianMixture` (or
scikit-learn's), which shows the point estimate, or a fitted
:class:`~bayes_gmm.BayesianGaussianMixture`, which adds what the posterior says: bands,
ellipses from posterior draws, posterior-averaged memberships.

The diagnostics functions (:func:`plot_trace_dist`, :func:`plot_rank`,
:func:`plot_forest`) are thin wrappers over ``arviz_plots``; they return its
``PlotCollection`` (its figure is ``pc.viz["figure"].item()``, see :func:`figure_of`).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bayes_gmm._gaussian import full_covariances
from bayes_gmm._validation import check_data

__all__ = [
    "figure_of",
    "plot_clusters",
    "plot_density",
    "plot_forest",
    "plot_rank",
    "plot_selection",
    "plot_trace_dist",
    "plot_uncertainty",
    "separating_pair",
]


# --------------------------------------------------------------------------- helpers


def _new_axes(ax, figsize=(6.4, 4.4)):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt

    _, ax = plt.subplots(figsize=figsize, layout="constrained")
    return ax


def _component_colors(n_components):
    import matplotlib as mpl

    cmap = mpl.colormaps["tab10"] if n_components <= 10 else mpl.colormaps["tab20"]
    return [cmap(k % cmap.N) for k in range(n_components)]


class _Params(NamedTuple):
    """S parameter sets: weights (S, K), means (S, K, d), covariances (S, K, d, d)."""

    weights: np.ndarray
    means: np.ndarray
    covariances: np.ndarray


def _em_estimator(model):
    """The EM fit behind ``model``: itself for EM estimators, the stored one for Bayesian ones."""
    if hasattr(model, "means_") and hasattr(model, "weights_"):
        return model
    est = getattr(model, "em_", None)
    if est is not None and hasattr(est, "means_"):
        return est
    raise TypeError(
        f"{type(model).__name__} is not a fitted Gaussian mixture (no EM estimate found); "
        "fit it first."
    )


def _point_params(model):
    """The EM/MAP estimate as a single parameter set (S = 1)."""
    est = _em_estimator(model)
    means = np.atleast_2d(np.asarray(est.means_, dtype=float))
    K, d = means.shape
    cov = full_covariances(est.covariances_, est.covariance_type, K, d)
    return _Params(np.asarray(est.weights_, float)[None], means[None], np.asarray(cov)[None])


def _posterior_params(model, n_draws=None, random_state=0):
    """Up to ``n_draws`` posterior parameter sets of a Bayesian fit, or None for an EM fit."""
    getter = getattr(model, "posterior_parameters", None)
    if getter is None:
        return None
    weights, means, covariances = getter(full=True)  # (S, K), (S, K, d), (S, K, d, d)
    S = weights.shape[0]
    if n_draws is not None and n_draws < S:
        rng = np.random.default_rng(random_state)
        idx = np.sort(rng.choice(S, size=n_draws, replace=False))
        weights, means, covariances = weights[idx], means[idx], covariances[idx]
    return _Params(np.asarray(weights), np.asarray(means), np.asarray(covariances))


def _as_array(X, model=None):
    """The data as a finite 2-D float array, and the column names (x0, x1, ... without).

    NaN is let through for a model fitted with ``missing="em"``: its memberships use each
    row's observed values, and a point missing a plotted coordinate is not drawn.
    """
    values = check_data(X, allow_nan=getattr(model, "missing", "error") == "em")
    if hasattr(X, "columns"):
        names = [str(c) for c in X.columns]
    else:
        names = [f"x{j}" for j in range(values.shape[1])]
    return values, names


def _unit(name, units):
    return units.get(name) if isinstance(units, dict) else units


def _axis_label(name, units):
    """``name [unit]`` when ``units`` (a string for every column, or a mapping) gives one."""
    unit = _unit(name, units)
    return f"{name} [{unit}]" if unit else name


def _pick_columns(columns, names, n_features):
    cols = []
    for c in columns:
        if isinstance(c, str):
            if c not in names:
                raise ValueError(f"column {c!r} not found; available: {names}")
            cols.append(names.index(c))
        else:
            if not 0 <= int(c) < n_features:
                raise ValueError(f"column index {c} out of range for {n_features} features")
            cols.append(int(c))
    return cols


def separating_pair(model):
    """The two features along which the fitted components are most separated.

    For every pair of features, the components' means are compared through the 2-D
    marginal covariances: the score is the weight-weighted sum over component pairs of
    the squared Mahalanobis distance between their means (with the average of the two
    covariances). Use it to choose ``columns`` for :func:`plot_clusters` and
    :func:`plot_uncertainty` on data with more than two features.

    Parameters
    ----------
    model : fitted GaussianMixture or BayesianGaussianMixture (its EM estimate is used)

    Returns
    -------
    tuple of int
        Column indices ``(i, j)`` with ``i < j``; ``(0, 1)`` for two features.
    """
    point = _point_params(model)
    w, mu, cov = point.weights[0], point.means[0], point.covariances[0]
    K, d = mu.shape
    if d < 2:
        raise ValueError("separating_pair needs at least 2 features")
    best, best_score = (0, 1), -np.inf
    a, b = np.triu_indices(K, 1)
    for i in range(d):
        for j in range(i + 1, d):
            sub = np.ix_([i, j], [i, j])
            diff = mu[a][:, [i, j]] - mu[b][:, [i, j]]  # (pairs, 2)
            pooled = 0.5 * (cov[a][:, sub[0], sub[1]] + cov[b][:, sub[0], sub[1]])
            maha = np.einsum("pi,pi->p", diff, np.linalg.solve(pooled, diff[..., None])[..., 0])
            score = float(np.sum(w[a] * w[b] * maha))
            if score > best_score:
                best, best_score = (i, j), score
    return best


def _membership(model, X, proba=None):
    """Posterior-averaged (Bayesian) or EM membership probabilities, shape (n, K).

    ``proba``, when given, is used instead of ``model.predict_proba(X)``: an array of shape
    (n, K) or the Dataset of :meth:`BayesianGaussianMixture.membership` (its ``mean``).
    """
    if proba is None:
        return np.asarray(model.predict_proba(X))
    resp = np.asarray(proba["mean"] if _is_membership(proba) else proba, dtype=float)
    if resp.ndim != 2 or resp.shape[0] != len(X):
        raise ValueError(
            f"proba must have shape (n_samples, n_components) = ({len(X)}, K), got {resp.shape}"
        )
    return resp


def _is_membership(obj):
    """Whether ``obj`` is what ``BayesianGaussianMixture.membership`` returns."""
    return hasattr(obj, "data_vars") and {"mean", "lower", "upper"} <= set(obj.data_vars)


def _norm_pdf(x, mean, var):
    return np.exp(-0.5 * (x - mean) ** 2 / var) / np.sqrt(2 * np.pi * var)


def _ellipse(mean, cov, prob, **kwargs):
    """The ellipse holding ``prob`` of a 2-D normal's mass."""
    from matplotlib.patches import Ellipse
    from scipy.stats import chi2

    vals, vecs = np.linalg.eigh(cov)
    vals = np.clip(vals, 0, None)
    radius = np.sqrt(chi2.ppf(prob, df=2))
    angle = np.degrees(np.arctan2(vecs[1, 1], vecs[0, 1]))
    width, height = 2 * radius * np.sqrt(vals[1]), 2 * radius * np.sqrt(vals[0])
    return Ellipse(mean, width, height, angle=angle, fill=False, **kwargs)


# --------------------------------------------------------------------------- selection


def plot_selection(selection, criterion=None, ax=None, zoom=False):
    """The criterion against K, one line per covariance structure, the winner marked.

    Draws with :meth:`ModelSelection.plot <bayes_gmm.ModelSelection.plot>`, names the
    winner under ``criterion`` in the title, and with ``zoom`` narrows the vertical range
    to the competitive models.

    Parameters
    ----------
    selection : ModelSelection
        The result of :func:`bayes_gmm.select_model`.
    criterion : {"bic", "aic", "icl"}, optional
        Default: the criterion the selection was made with.
    ax : matplotlib Axes, optional
    zoom : bool or float, default=False
        False: the whole grid. True: from the best value up to three times the median
        distance to it (the poor models run off the top). A number: that many criterion
        units above the best.

    Returns
    -------
    matplotlib Axes
        Lower is better (scikit-learn's sign; mclust plots the negative).
    """
    ax = _new_axes(ax)
    selection.plot(criterion=criterion, ax=ax)
    criterion = (criterion or selection.criterion).lower()
    scores = selection.table[criterion].to_numpy(dtype=float)
    finite = np.isfinite(scores)
    if not finite.any():
        return ax
    # The winner under *this* criterion (it may differ from the one the selection used).
    row = selection.top(1, criterion).iloc[0]
    best = float(row[criterion])
    zoomed = zoom is not False and finite.sum() > 1
    ax.set_title(
        f"{criterion.upper()}{' (zoomed)' if zoomed else ''}: best {row['covariance_type']}, "
        f"K = {int(row['n_components'])}, {criterion.upper()} = {best:.1f}",
        fontsize="medium",
    )
    if zoomed:
        width = 3 * np.median(scores[finite] - best) if zoom is True else float(zoom)
        if width > 0:
            ax.set_ylim(best - 0.08 * width, best + width)
    ax.grid(alpha=0.3)
    return ax


# --------------------------------------------------------------------------- density


def plot_density(model, X, ax=None, column=0, bins="auto", prob=0.9, n_draws=300, units=None):
    """Histogram of one feature with the fitted mixture density and its components.

    For a Bayesian fit: the posterior predictive density (mean over draws) with its
    ``prob`` band, and the components at the posterior mean. For an EM fit: the
    estimated density and components.

    Parameters
    ----------
    model : fitted GaussianMixture or BayesianGaussianMixture
    X : array-like of shape (n_samples, n_features) or (n_samples,)
    ax : matplotlib Axes, optional
    column : int or str, default=0
        The feature to show (the marginal density for multivariate data).
    bins : int or str, default="auto"
        Histogram bins (see ``numpy.histogram``).
    prob : float, default=0.9
        Mass of the credible band.
    n_draws : int, default=300
        Posterior draws used for the band.
    units : str or dict, optional
        The unit of the feature (or ``{column: unit}``), shown on the axis.

    Returns
    -------
    matplotlib Axes
    """
    values, names = _as_array(X)
    (j,) = _pick_columns([column], names, values.shape[1])
    x = values[:, j]
    ax = _new_axes(ax)
    ax.hist(x, bins=bins, density=True, color="0.82", edgecolor="white", label="data")

    span = x.max() - x.min() if x.size > 1 else 1.0
    grid = np.linspace(x.min() - 0.1 * span, x.max() + 0.1 * span, 400)
    post = _posterior_params(model, n_draws)
    params = post if post is not None else _point_params(model)
    mu = params.means[:, :, j]  # (S, K)
    var = params.covariances[:, :, j, j]
    comp = params.weights[:, :, None] * _norm_pdf(grid, mu[..., None], var[..., None])  # S,K,G
    total = comp.sum(axis=1)  # (S, G)
    colors = _component_colors(mu.shape[1])
    if post is not None:
        lo, hi = np.quantile(total, [(1 - prob) / 2, (1 + prob) / 2], axis=0)
        ax.fill_between(
            grid, lo, hi, color="0.35", alpha=0.35, label=f"{prob:.0%} band", gid="density-band"
        )
        ax.plot(grid, total.mean(axis=0), color="black", lw=2, label="posterior predictive")
    else:
        ax.plot(grid, total[0], color="black", lw=2, label="EM density")
    comp_mean = comp.mean(axis=0)
    for k in range(comp_mean.shape[0]):
        ax.plot(
            grid,
            comp_mean[k],
            ls="--",
            color=colors[k],
            lw=1.3,
            label=f"component {k}",
            gid="density-component",
        )
    ax.set_xlabel(_axis_label(names[j], units))
    unit = _unit(names[j], units)
    ax.set_ylabel(f"density [1/{unit}]" if unit else "density")
    ax.set_title("Mixture density" + (" (posterior)" if post is not None else " (EM)"))
    ax.legend(fontsize="small")
    return ax


# --------------------------------------------------------------------------- clusters


def plot_clusters(
    model,
    X,
    ax=None,
    columns=(0, 1),
    prob=0.9,
    n_draws=20,
    random_state=0,
    legend=True,
    proba=None,
    certain=0.9,
    units=None,
):
    """Scatter coloured by most likely component; open markers where membership is unsure.

    Covariance ellipses (each holding ``prob`` of its component's mass) are drawn for the
    EM estimate (thick) and, for a Bayesian fit, for ``n_draws`` posterior draws (thin),
    so the spread of the thin ellipses shows the uncertainty about each component.

    Parameters
    ----------
    model : fitted GaussianMixture or BayesianGaussianMixture
    X : array-like of shape (n_samples, n_features), n_features >= 2
    ax : matplotlib Axes, optional
    columns : pair of int or str, default=(0, 1)
        The two features to show; ellipses are the marginal ones for that pair.
    prob : float, default=0.9
        Mass inside each ellipse.
    n_draws : int, default=20
        Posterior draws whose ellipses are drawn (Bayesian fits only).
    random_state : int, default=0
        Which draws are shown.
    legend : bool, default=True
    proba : array-like of shape (n_samples, n_components), optional
        Membership probabilities of ``X`` if already computed (or the Dataset of
        :meth:`BayesianGaussianMixture.membership`); default ``model.predict_proba(X)``.
    certain : float, default=0.9
        Points whose largest membership probability reaches it are filled; the others are
        drawn open (a ring in their most likely component's colour).
    units : str or dict, optional
        The data's unit (or ``{column: unit}``), shown on the axes.

    Returns
    -------
    matplotlib Axes
        The points are one PathCollection (gid ``"clusters-points"``), the EM means
        another (``"clusters-means"``); ellipses have gid ``"ellipse-em"`` or
        ``"ellipse-posterior"``.
    """
    from matplotlib.lines import Line2D

    values, names = _as_array(X, model)
    if values.shape[1] < 2:
        raise ValueError("plot_clusters needs at least 2 features; use plot_density for 1-D data")
    cols = _pick_columns(columns, names, values.shape[1])
    if len(cols) != 2 or cols[0] == cols[1]:
        raise ValueError(f"columns must name two different features, got {columns!r}")
    resp = _membership(model, X, proba)
    ax = _new_axes(ax, figsize=(8.4, 4.8) if legend else (6.4, 4.8))
    K = resp.shape[1]
    labels = resp.argmax(axis=1)
    certainty = resp.max(axis=1)
    colors = np.array(_component_colors(K))
    edge = colors[labels].copy()
    face = edge.copy()
    unsure = certainty < certain
    face[unsure, 3] = 0.0  # open markers: readable at a glance, unlike a fainter shade
    edge[:, 3] = 0.9
    face[~unsure, 3] = 0.75
    drawn = np.isfinite(values[:, cols]).all(axis=1)  # a missing coordinate: no point
    ax.scatter(
        values[drawn, cols[0]],
        values[drawn, cols[1]],
        facecolors=face[drawn],
        edgecolors=edge[drawn],
        linewidths=np.where(unsure, 1.1, 0.0)[drawn],
        s=np.where(unsure, 26, 18)[drawn],
        gid="clusters-points",
    )
    sub = np.ix_(cols, cols)
    post = _posterior_params(model, n_draws, random_state)
    if post is not None:
        for s in range(post.weights.shape[0]):
            for k in range(K):
                e = _ellipse(
                    post.means[s, k, cols],
                    post.covariances[s, k][sub],
                    prob,
                    edgecolor=colors[k],
                    lw=0.6,
                    alpha=0.35,
                    gid="ellipse-posterior",
                )
                ax.add_patch(e)
    point = _point_params(model)
    for k in range(K):
        ax.add_patch(
            _ellipse(
                point.means[0, k, cols],
                point.covariances[0, k][sub],
                prob,
                edgecolor=colors[k],
                lw=2.2,
                gid="ellipse-em",
            )
        )
    ax.scatter(
        point.means[0, :, cols[0]],
        point.means[0, :, cols[1]],
        marker="X",
        s=90,
        c=colors,
        edgecolors="black",
        zorder=4,
        gid="clusters-means",
    )
    ax.autoscale_view()
    ax.set_xlabel(_axis_label(names[cols[0]], units))
    ax.set_ylabel(_axis_label(names[cols[1]], units))
    ax.set_title(f"Clusters (K = {K}): {int(unsure.sum())} of {len(unsure)} points unsure")
    if legend:
        handles = [
            Line2D([], [], marker="o", ls="", color=colors[k], label=f"component {k}")
            for k in range(K)
        ]
        handles += [
            Line2D([], [], marker="o", ls="", mfc="0.4", mec="0.4", label=f"p >= {certain:g}"),
            Line2D([], [], marker="o", ls="", mfc="none", mec="0.3", label=f"p < {certain:g}"),
            Line2D([], [], marker="X", ls="", ms=9, mfc="0.6", mec="black", label="EM mean"),
            Line2D([], [], color="0.2", lw=2.2, label=f"EM {prob:.0%} ellipse"),
        ]
        if post is not None:
            handles.append(
                Line2D([], [], color="0.2", lw=0.6, alpha=0.5, label="posterior draws' ellipses")
            )
        ax.legend(
            handles=handles,
            fontsize="small",
            title="p: largest membership probability",
            title_fontsize="small",
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
        )
    return ax


# --------------------------------------------------------------------------- uncertainty


def plot_uncertainty(
    model, X, ax=None, columns=(0, 1), quantiles=(0.75, 0.95), proba=None, units=None
):
    """The points whose membership is least certain (mclust's uncertainty plot).

    Uncertainty is ``1 - max_k p(component k | x)`` (posterior-averaged for a Bayesian
    fit). In 2-D, points above the ``quantiles`` of the uncertainty are drawn larger and
    darker, so the boundary regions stand out. In 1-D, uncertainty is plotted against the
    feature, with each uncertain point's credible interval for a Bayesian fit.

    Parameters
    ----------
    model : fitted GaussianMixture or BayesianGaussianMixture
    X : array-like of shape (n_samples, n_features)
    ax : matplotlib Axes, optional
    columns : pair of int or str, default=(0, 1)
        The two features to show (ignored for 1-D data).
    quantiles : pair of float, default=(0.75, 0.95)
    proba : array-like of shape (n_samples, n_components) or xarray.Dataset, optional
        Membership probabilities of ``X`` if already computed: an array (default
        ``model.predict_proba(X)``), or the Dataset of
        :meth:`BayesianGaussianMixture.membership`, whose intervals the 1-D plot then
        uses (default there: ``model.membership(X, prob=0.9)``, computed once).
    units : str or dict, optional
        The data's unit (or ``{column: unit}``), shown on the axes.

    Returns
    -------
    matplotlib Axes
        Points are drawn in three PathCollections with gids ``"uncertainty-low"``,
        ``"uncertainty-mid"`` and ``"uncertainty-high"``.
    """
    values, names = _as_array(X, model)
    mem = proba if _is_membership(proba) else None
    if mem is not None and not hasattr(model, "most_likely_component"):
        raise TypeError(
            "proba is the Dataset of BayesianGaussianMixture.membership, but model is a "
            f"{type(model).__name__}: pass the Bayesian model that computed it, or an array "
            "of probabilities."
        )
    if mem is None and proba is None and values.shape[1] == 1 and hasattr(model, "membership"):
        # A Bayesian fit knows how uncertain the uncertainty is: one call gives both.
        mem = model.membership(values, prob=0.9)
    resp = _membership(model, X, proba if mem is None else mem)
    unc = 1.0 - resp.max(axis=1)
    ax = _new_axes(ax, figsize=(8.4, 4.8))
    q_mid, q_high = np.quantile(unc, quantiles)
    # Points with essentially no uncertainty never count as "uncertain", whatever the quantile.
    floor = 1e-3
    high = (unc >= q_high) & (unc > floor)
    mid = (unc >= q_mid) & ~high & (unc > floor)
    low = ~(high | mid)
    if values.shape[1] == 1:
        xs, ys = values[:, 0], unc
        ax.set_xlabel(_axis_label(names[0], units))
        ax.set_ylabel("uncertainty = 1 - max probability")
        if mem is not None and (mid | high).any():
            prob = mem.attrs.get("prob", 0.9)
            best = model.most_likely_component(values, prob=prob, membership=mem)
            lo = 1.0 - best["upper"].to_numpy()
            hi = 1.0 - best["lower"].to_numpy()
            sel = mid | high
            ax.vlines(
                xs[sel],
                lo[sel],
                hi[sel],
                color="C0",
                alpha=0.5,
                lw=1,
                label=f"{prob:.0%} interval",
                gid="uncertainty-interval",
            )
    else:
        cols = _pick_columns(columns, names, values.shape[1])
        xs, ys = values[:, cols[0]], values[:, cols[1]]
        ax.set_xlabel(_axis_label(names[cols[0]], units))
        ax.set_ylabel(_axis_label(names[cols[1]], units))
    n = len(unc)
    ax.scatter(
        xs[low],
        ys[low],
        s=8,
        c="0.75",
        edgecolors="none",
        gid="uncertainty-low",
        label=f"below {max(q_mid, floor):.2g}: {int(low.sum())} of {n} points",
    )
    ax.scatter(
        xs[mid],
        ys[mid],
        s=30,
        c="0.4",
        edgecolors="none",
        gid="uncertainty-mid",
        label=_level_label(q_mid, floor, quantiles[0], mid.sum()),
    )
    ax.scatter(
        xs[high],
        ys[high],
        s=70,
        c="black",
        edgecolors="none",
        gid="uncertainty-high",
        label=_level_label(q_high, floor, quantiles[1], high.sum()),
    )
    title = f"Membership uncertainty, 1 - largest probability (max {unc.max():.2g})"
    if not (mid | high).any():
        title += f"\nno point above {floor:g}: every membership is clear"
    ax.set_title(title)
    ax.legend(
        fontsize="small",
        title="uncertainty = 1 - max probability",
        title_fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
    )
    return ax


def _level_label(quantile_value, floor, quantile, count):
    if quantile_value > floor:
        return f">= {quantile_value:.2g} (top {1 - quantile:.0%}): {int(count)}"
    return f">= {floor:g}: {int(count)}"


# --------------------------------------------------------------------------- diagnostics


def _idata(model):
    tree = getattr(model, "idata_", model)
    if not hasattr(tree, "children") or "posterior" not in tree.children:
        raise TypeError(
            "expected a fitted BayesianGaussianMixture or a DataTree with a posterior group"
        )
    return tree


def _display_tree(model, var_names):
    """The tree to plot and the variables: by default weights and means split per feature.

    Means of different features live on different scales (minutes vs hours, mm vs kg);
    one panel per feature keeps each readable.
    """
    import xarray as xr

    tree = _idata(model)
    post = tree["posterior"].to_dataset()
    data = {}
    if "weights" in post:
        data["weights"] = post["weights"]
    if "means" in post and "feature" in post["means"].dims:
        for f in post["feature"].values:
            data[f"means[{f}]"] = post["means"].sel(feature=f, drop=True)
    if var_names is not None:
        names = list(var_names)
        if not any(name in data and name not in post for name in names):
            return tree, names  # the stored variables as they are
        # Per-feature means asked for by name: the same split tree, with what else was asked.
        data.update({name: post[name] for name in names if name in post and name not in data})
        missing = [name for name in names if name not in data]
        if missing:
            raise ValueError(f"unknown variable(s) {missing}; available: {sorted(data)}")
        data = {name: data[name] for name in names}
    elif not data:
        return tree, list(post.data_vars)
    groups = {"posterior": xr.Dataset(data)}
    if "sample_stats" in tree.children:
        groups["sample_stats"] = tree["sample_stats"].to_dataset()
    return xr.DataTree.from_dict(groups), list(data) if var_names is None else names


def figure_of(obj):
    """The matplotlib Figure behind an Axes, a Figure or an arviz_plots PlotCollection."""
    if hasattr(obj, "viz"):
        return obj.viz["figure"].item()
    if hasattr(obj, "savefig"):
        return obj
    return obj.figure


def plot_trace_dist(model, var_names=None, **kwargs):
    """Per-chain marginal densities and traces (``arviz_plots.plot_trace_dist``).

    Parameters
    ----------
    model : fitted BayesianGaussianMixture, or a DataTree with a posterior group
    var_names : list of str, optional
        Default: the weights, and the means with one panel per feature
        (variables ``means[<feature>]``).
    **kwargs
        Passed to ``arviz_plots.plot_trace_dist``.

    Returns
    -------
    arviz_plots.PlotCollection
        Chains that disagree (label switching, a stuck chain) show as separate curves.
    """
    import arviz_plots as azp

    tree, names = _display_tree(model, var_names)
    has_components = "component" in tree["posterior"].dims
    if has_components:
        # Component k keeps its colour in every panel; chains differ by line style.
        kwargs.setdefault("aes", {"color": ["component"], "linestyle": ["chain"]})
    else:
        kwargs.setdefault("aes", {"color": ["chain"]})
    kwargs.setdefault("figure_kwargs", {"layout": "constrained"})
    pc = azp.plot_trace_dist(tree, var_names=names, backend="matplotlib", **kwargs)
    # Every row named on both panels (arviz labels the value axis of the densities only,
    # and the trace's y label collides with long names): a title per panel instead.
    for i, name in enumerate(names):
        dist, trace = (pc.viz["plot"][name].sel(column=c).item() for c in ("dist", "trace"))
        dist.set_xlabel("")
        trace.set_ylabel("")
        dist.set_title(f"{name}: density per chain", loc="left", fontsize="medium")
        trace.set_title(f"{name}: draws", loc="left", fontsize="medium")
        if i < len(names) - 1:
            trace.set_xlabel("")
    aes = kwargs["aes"]
    legends = [dim for dims in aes.values() for dim in dims if dim in tree["posterior"].dims]
    for j, dim in enumerate(dict.fromkeys(legends)):
        pc.add_legend(dim, loc="upper left", bbox_to_anchor=(1.0, 1.0 - 0.25 * j))
    return pc


def plot_rank(model, var_names=None, **kwargs):
    """Rank ECDF plots per chain (``arviz_plots.plot_rank``); all inside the band is good.

    Parameters
    ----------
    model : fitted BayesianGaussianMixture, or a DataTree with a posterior group
    var_names : list of str, optional
        Default: the weights, and the means with one panel per feature
        (variables ``means[<feature>]``).
    **kwargs
        Passed to ``arviz_plots.plot_rank``.

    Returns
    -------
    arviz_plots.PlotCollection
    """
    import arviz_plots as azp

    tree, names = _display_tree(model, var_names)
    kwargs.setdefault("figure_kwargs", {"layout": "constrained"})  # titles clear of ticks
    pc = azp.plot_rank(tree, var_names=names, backend="matplotlib", **kwargs)
    pc.add_legend("chain", loc="outside upper right")
    figure_of(pc).suptitle(
        "Rank ECDF minus uniform, per chain: chains that mix well stay close to 0 and "
        "cross each other; p is the test of uniformity",
        x=0.01,
        ha="left",
        fontsize="medium",
    )
    return pc


def plot_forest(model, var_names=None, combined=True, **kwargs):
    """Credible intervals per parameter (``arviz_plots.plot_forest``).

    Parameters
    ----------
    model : fitted BayesianGaussianMixture, or a DataTree with a posterior group
    var_names : list of str, optional
        Default: the weights (one forest shares one axis, so means in data units
        would squash them); e.g. ``["means[waiting]"]`` for the means of one feature.
    combined : bool, default=True
        One interval over all chains (False: one per chain).
    **kwargs
        Passed to ``arviz_plots.plot_forest``.

    Returns
    -------
    arviz_plots.PlotCollection
    """
    import arviz_plots as azp

    tree = _idata(model)
    if var_names is None and "weights" in tree["posterior"].data_vars:
        # One forest shares one x-axis: mixing weights with means in data units would
        # squash every interval, so by default show the weights only.
        names = ["weights"]
    else:
        tree, names = _display_tree(model, var_names)
    post = tree["posterior"].to_dataset()
    n_rows = sum(
        int(np.prod([post[v].sizes[d] for d in post[v].dims if d not in ("chain", "draw")]))
        for v in names
    ) * (1 if combined else post.sizes["chain"])
    ci_probs = kwargs.setdefault("ci_probs", (0.5, 0.94))  # 0.94: as summary() reports
    kwargs.setdefault(
        "figure_kwargs", {"figsize": (7.0, 1.3 + 0.32 * n_rows), "layout": "constrained"}
    )
    pc = azp.plot_forest(tree, var_names=names, combined=combined, backend="matplotlib", **kwargs)
    fig = figure_of(pc)
    fig.suptitle(f"Posterior of {', '.join(names)}", x=0.02, ha="left")
    value_ax = fig.axes[-1]
    value_ax.set_xlabel(
        f"value: point = posterior mean; thick bar = {ci_probs[0]:.0%}, thin bar = "
        f"{ci_probs[1]:.0%} equal-tailed interval" + ("" if combined else "; one row per chain")
    )
    return pc
