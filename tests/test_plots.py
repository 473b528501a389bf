"""Plots render (Agg) and show what they claim: counts of points, ellipses, lines, bands."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import Ellipse

from bayes_gmm import GaussianMixture, plots
from bayes_gmm.datasets import load_faithful, make_foot_sizes
from bayes_gmm.structures import MCLUST_MODELS

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def faithful():
    return load_faithful()


@pytest.fixture(scope="module")
def em3(faithful):
    return GaussianMixture(3, covariance_type="tied", n_init=3, random_state=0).fit(faithful)


@pytest.fixture(scope="module")
def feet():
    X, labels = make_foot_sizes(random_state=0)
    return X, labels


def by_gid(ax, gid, kind=None):
    children = [a for a in ax.get_children() if a.get_gid() == gid]
    return [a for a in children if kind is None or isinstance(a, kind)]


def render(ax, tmp_path, name):
    path = tmp_path / f"{name}.png"
    ax.figure.savefig(path, dpi=60)
    assert path.stat().st_size > 5_000  # a drawn figure, not an empty canvas
    return path


def test_plot_clusters_em(em3, faithful, tmp_path):
    ax = plots.plot_clusters(em3, faithful)
    render(ax, tmp_path, "clusters")
    (points,) = by_gid(ax, "clusters-points")
    assert points.get_offsets().shape == (272, 2)
    edges, faces = points.get_edgecolors(), points.get_facecolors()
    # One colour per component; points less sure than 90% are open rings.
    assert len({tuple(np.round(c[:3], 3)) for c in edges}) == 3
    certainty = em3.predict_proba(faithful).max(axis=1)
    np.testing.assert_array_equal(faces[:, 3] == 0, certainty < 0.9)
    assert 0 < (certainty < 0.9).sum() < 272
    assert f"{(certainty < 0.9).sum()} of 272 points unsure" in ax.get_title()
    # Everything drawn is in the legend, the EM means included.
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == [
        "component 0",
        "component 1",
        "component 2",
        "p >= 0.9",
        "p < 0.9",
        "EM mean",
        "EM 90% ellipse",
    ]
    assert "largest membership probability" in ax.get_legend().get_title().get_text()
    ellipses = by_gid(ax, "ellipse-em", Ellipse)
    assert len(ellipses) == 3
    assert by_gid(ax, "ellipse-posterior") == []
    # The tied structure: all three ellipses have the same shape.
    widths = sorted(round(e.width, 6) for e in ellipses)
    assert widths[0] == widths[-1]
    centers = np.array([e.center for e in ellipses])
    centers = centers[np.argsort(centers[:, 0])]
    np.testing.assert_allclose(centers, em3.means_[np.argsort(em3.means_[:, 0])])
    assert ax.get_xlabel() == "eruptions" and ax.get_ylabel() == "waiting"


def test_ellipse_holds_the_stated_mass():
    rng = np.random.default_rng(0)
    cov = np.array([[2.0, 1.2], [1.2, 1.5]])
    z = rng.multivariate_normal([1.0, -1.0], cov, 20_000)
    e = plots._ellipse(np.array([1.0, -1.0]), cov, 0.9)
    # Transform points into the ellipse's unit-circle frame.
    unit = e.get_patch_transform().inverted().transform(z)
    inside = np.hypot(unit[:, 0], unit[:, 1]) <= 1.0
    assert abs(inside.mean() - 0.9) < 0.01


def test_plot_clusters_column_choice_and_errors(em3, faithful):
    ax = plots.plot_clusters(em3, faithful, columns=("waiting", "eruptions"))
    assert ax.get_xlabel() == "waiting"
    (points,) = by_gid(ax, "clusters-points")
    np.testing.assert_array_equal(points.get_offsets()[:, 0], faithful["waiting"])
    with pytest.raises(ValueError, match="not found"):
        plots.plot_clusters(em3, faithful, columns=("waiting", "nope"))
    X1, _ = make_foot_sizes(100, 50, random_state=0)
    em1 = GaussianMixture(2, random_state=0).fit(X1)
    with pytest.raises(ValueError, match="at least 2 features"):
        plots.plot_clusters(em1, X1)
    # Data are checked like every other entry point: a NaN is named, not drawn.
    bad = faithful.copy()
    bad.iloc[5, 1] = np.nan
    for plot in (plots.plot_clusters, plots.plot_uncertainty, plots.plot_density):
        with pytest.raises(ValueError, match="contains NaN"):
            plot(em3, bad)


def test_separating_pair_finds_the_informative_features():
    from bayes_gmm.datasets import make_mixture

    rng = np.random.default_rng(0)
    X2, _, _ = make_mixture(400, 3, 2, separation=6.0, random_state=1)
    # Columns 0, 1 and 3 are noise; 2 and 4 carry the clusters.
    X = np.column_stack(
        [rng.normal(size=400), rng.normal(size=400), X2[:, 0], rng.normal(size=400), X2[:, 1]]
    )
    em = GaussianMixture(3, random_state=0).fit(X)
    assert plots.separating_pair(em) == (2, 4)
    assert plots.separating_pair(GaussianMixture(2, random_state=0).fit(X[:, :2])) == (0, 1)


def test_plot_clusters_uses_given_axes(em3, faithful):
    _fig, (a, b) = plt.subplots(1, 2)
    out = plots.plot_clusters(em3, faithful, ax=b)
    assert out is b and len(a.collections) == 0 and len(b.collections) >= 1


def test_plot_density_em(feet, tmp_path):
    X, _ = feet
    em = GaussianMixture(2, random_state=0).fit(X)
    ax = plots.plot_density(em, X)
    render(ax, tmp_path, "density")
    assert len(ax.patches) > 5  # histogram bars
    comps = by_gid(ax, "density-component")
    assert len(comps) == 2
    assert by_gid(ax, "density-band") == []
    total = next(ln for ln in ax.get_lines() if ln.get_label() == "EM density")
    x, y = total.get_data()
    # The drawn density integrates to ~1 and equals the sum of the drawn components.
    assert abs(np.trapezoid(y, x) - 1) < 0.01
    np.testing.assert_allclose(y, sum(c.get_ydata() for c in comps))
    # Its modes sit near 240 and 270 mm.
    peaks = x[1:-1][(y[1:-1] > y[:-2]) & (y[1:-1] > y[2:])]
    np.testing.assert_allclose(np.sort(peaks), [240, 270], atol=3)


def test_plot_uncertainty_em(em3, faithful, tmp_path):
    ax = plots.plot_uncertainty(em3, faithful)
    render(ax, tmp_path, "uncertainty")
    groups = {g: by_gid(ax, f"uncertainty-{g}")[0].get_offsets() for g in ("low", "mid", "high")}
    assert sum(len(v) for v in groups.values()) == 272
    unc = 1 - em3.predict_proba(faithful).max(axis=1)
    # The "high" group holds the most uncertain 5% of points.
    n_high = len(groups["high"])
    assert 0 < n_high <= int(np.ceil(0.05 * 272)) + 1
    top = np.sort(unc)[-n_high:]
    high_pts = groups["high"]
    idx = [int(np.flatnonzero((faithful.to_numpy() == p).all(axis=1))[0]) for p in high_pts]
    np.testing.assert_allclose(np.sort(unc[idx]), top)


def test_plot_uncertainty_says_what_uncertainty_is(em3, faithful):
    ax = plots.plot_uncertainty(em3, faithful, units="min")
    assert "1 - largest probability" in ax.get_title()
    legend = ax.get_legend()
    assert legend.get_title().get_text() == "uncertainty = 1 - max probability"
    labels = [t.get_text() for t in legend.get_texts()]
    assert labels[0].startswith("below ") and labels[0].endswith(" of 272 points")
    assert "(top 25%)" in labels[1] and "(top 5%)" in labels[2]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruptions [min]", "waiting [min]")


def test_plot_uncertainty_when_nothing_is_uncertain():
    import pandas as pd

    rng = np.random.default_rng(0)
    Y = pd.DataFrame(np.r_[rng.normal(0, 1, (100, 2)), rng.normal(30, 1, (100, 2))])
    em = GaussianMixture(2, random_state=0).fit(Y)
    ax = plots.plot_uncertainty(em, Y)
    assert "every membership is clear" in ax.get_title()
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    # No "above the 75% quantile (1)" for a point that is not uncertain at all.
    assert labels == ["below 0.001: 200 of 200 points", ">= 0.001: 0", ">= 0.001: 0"]


def test_units_label_the_axes(em3, faithful, feet):
    ax = plots.plot_clusters(em3, faithful, units={"eruptions": "min", "waiting": "min"})
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruptions [min]", "waiting [min]")
    ax = plots.plot_clusters(em3, faithful, units={"waiting": "min"})
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("eruptions", "waiting [min]")
    X, _ = feet
    em = GaussianMixture(2, random_state=0).fit(X)
    ax = plots.plot_density(em, X, units="mm")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x0 [mm]", "density [1/mm]")


def test_plot_uncertainty_1d(feet):
    X, _ = feet
    em = GaussianMixture(2, random_state=0).fit(X)
    ax = plots.plot_uncertainty(em, X)
    (high,) = by_gid(ax, "uncertainty-high")
    # The uncertain points are between the two groups, near the crossing point (~257 mm).
    assert np.all((high.get_offsets()[:, 0] > 245) & (high.get_offsets()[:, 0] < 265))


@pytest.fixture(scope="module")
def selection(faithful):
    from bayes_gmm import select_model

    return select_model(faithful, n_components=range(1, 6), random_state=0, verbose=False)


def test_plot_selection_marks_the_winner(selection, tmp_path):
    ax = plots.plot_selection(selection)
    render(ax, tmp_path, "selection")
    labelled = {ln.get_label(): ln for ln in ax.get_lines()}
    curves = [lab for lab in labelled if lab in MCLUST_MODELS]
    assert curves == list(MCLUST_MODELS)  # the default grid: mclust's 14 models, in its order
    for lab in curves:
        assert len(labelled[lab].get_xdata()) == 5  # K = 1..5
    assert "best EEE, K = 3, BIC = 2314.3" in ax.get_title()
    assert "lower is better" in ax.get_ylabel()
    # Under another criterion the title names that criterion's winner.
    icl = selection.table.loc[selection.table["icl"].idxmin()]
    title = plots.plot_selection(selection, criterion="icl").get_title()
    assert f"best {icl['covariance_type']}, K = {icl['n_components']}, ICL = " in title


def test_plot_selection_zoom_keeps_the_best_in_view(selection):
    full = plots.plot_selection(selection)
    zoomed = plots.plot_selection(selection, zoom=True)
    best = selection.best_score
    lo, hi = zoomed.get_ylim()
    assert lo < best < hi
    assert hi - lo < 0.5 * np.ptp(full.get_ylim())
    lo, hi = plots.plot_selection(selection, zoom=25.0).get_ylim()
    assert hi == pytest.approx(best + 25.0)


# --------------------------------------------------------------------------- Bayesian fits


@pytest.fixture(scope="module")
def bayes3(faithful):
    from bayes_gmm import BayesianGaussianMixture

    # Short chains: the plots' content, not the posterior's quality, is under test.
    with pytest.warns(UserWarning):  # ESS below 400 with so few draws
        return BayesianGaussianMixture(
            3, covariance_type="tied", draws=100, tune=150, chains=2, random_state=0
        ).fit(faithful)


@pytest.fixture(scope="module")
def bayes1():
    from bayes_gmm import BayesianGaussianMixture

    X, _ = make_foot_sizes(300, 150, random_state=0)
    with pytest.warns(UserWarning):
        model = BayesianGaussianMixture(2, draws=100, tune=150, chains=2, random_state=0).fit(X)
    return model, X


def test_plot_clusters_posterior_ellipses(bayes3, faithful, tmp_path):
    ax = plots.plot_clusters(bayes3, faithful, n_draws=15)
    render(ax, tmp_path, "clusters_bayes")
    assert len(by_gid(ax, "ellipse-em", Ellipse)) == 3
    post = by_gid(ax, "ellipse-posterior", Ellipse)
    assert len(post) == 3 * 15
    # Posterior ellipses scatter around the EM ones: centres within a few posterior sds.
    em_means = bayes3.em_.means_
    centers = np.array([e.center for e in post]).reshape(15, 3, 2)
    _, means, _ = bayes3.posterior_parameters()
    sd = means.std(axis=0)
    assert np.all(np.abs(centers - em_means).max(axis=0) < 6 * sd)
    (points,) = by_gid(ax, "clusters-points")
    assert points.get_offsets().shape == (272, 2)


def test_plot_density_posterior_band(bayes1, tmp_path):
    model, X = bayes1
    ax = plots.plot_density(model, X, n_draws=200)
    render(ax, tmp_path, "density_bayes")
    (band,) = by_gid(ax, "density-band")
    mean = next(ln for ln in ax.get_lines() if ln.get_label() == "posterior predictive")
    x, y = mean.get_data()
    assert abs(np.trapezoid(y, x) - 1) < 0.01
    # The band is a polygon around the mean curve: its vertical extent brackets it.
    verts = band.get_paths()[0].vertices
    at_peak = np.abs(verts[:, 0] - x[np.argmax(y)]) < (x[1] - x[0])
    assert verts[at_peak, 1].min() <= y.max() <= verts[at_peak, 1].max()
    assert len(by_gid(ax, "density-component")) == 2


def test_plot_uncertainty_1d_shows_membership_intervals(bayes1):
    model, X = bayes1
    ax = plots.plot_uncertainty(model, X)
    (intervals,) = by_gid(ax, "uncertainty-interval")
    segments = intervals.get_segments()
    n_marked = sum(len(by_gid(ax, f"uncertainty-{g}")[0].get_offsets()) for g in ("mid", "high"))
    assert len(segments) == n_marked > 0
    # Each segment stands at a marked point and spans 1 - the 90% interval of the
    # membership probability of that point's most likely component.
    marked = np.concatenate(
        [by_gid(ax, f"uncertainty-{g}")[0].get_offsets()[:, 0] for g in ("mid", "high")]
    )
    xs = np.array([seg[0][0] for seg in segments])
    np.testing.assert_array_equal(np.sort(xs), np.sort(marked))
    assert all(seg[0][0] == seg[1][0] for seg in segments)  # vertical
    mem = model.membership(X, prob=0.9)
    mean, lower, upper = (mem[v].to_numpy() for v in ("mean", "lower", "upper"))
    rows = np.array([np.flatnonzero(X[:, 0] == x)[0] for x in xs])
    best = mean[rows].argmax(axis=1)
    lo = np.array([seg[0][1] for seg in segments])
    hi = np.array([seg[1][1] for seg in segments])
    np.testing.assert_allclose(lo, 1 - upper[rows, best], rtol=0, atol=1e-12)
    np.testing.assert_allclose(hi, 1 - lower[rows, best], rtol=0, atol=1e-12)
    # A Bayesian membership Dataset with an EM model mixes two fits: refused, with advice.
    em = GaussianMixture(2, random_state=0).fit(X)
    with pytest.raises(TypeError, match="pass the Bayesian model"):
        plots.plot_uncertainty(em, X, proba=mem)


def test_plots_use_given_memberships_instead_of_recomputing(bayes1, bayes3, faithful, monkeypatch):
    model, X = bayes1
    mem = model.membership(X, prob=0.9)
    expected = plots.plot_uncertainty(model, X)
    calls = {"predict_proba": 0, "membership": 0}
    original = {name: getattr(type(model), name) for name in calls}

    def counted(name):
        def method(self, *args, **kwargs):
            calls[name] += 1
            return original[name](self, *args, **kwargs)

        return method

    for name in calls:
        monkeypatch.setattr(type(model), name, counted(name))
    given = plots.plot_uncertainty(model, X, proba=mem)
    assert calls == {"predict_proba": 0, "membership": 0}
    for g in ("low", "mid", "high", "interval"):
        (a,) = by_gid(expected, f"uncertainty-{g}")
        (b,) = by_gid(given, f"uncertainty-{g}")
        if g == "interval":
            np.testing.assert_allclose(np.array(a.get_segments()), np.array(b.get_segments()))
        else:
            np.testing.assert_allclose(a.get_offsets(), b.get_offsets())
    # Without proba, the 1-D plot asks the model once for memberships and intervals.
    plots.plot_uncertainty(model, X)
    assert calls == {"predict_proba": 0, "membership": 1}

    proba = bayes3.predict_proba(faithful)
    calls.update(predict_proba=0, membership=0)
    ax = plots.plot_clusters(bayes3, faithful, proba=proba, n_draws=2)
    plots.plot_uncertainty(bayes3, faithful, proba=proba)
    assert calls == {"predict_proba": 0, "membership": 0}
    (points,) = by_gid(ax, "clusters-points")
    certainty = proba.max(axis=1)
    np.testing.assert_array_equal(points.get_facecolors()[:, 3] == 0, certainty < 0.9)
    with pytest.raises(ValueError, match=r"proba must have shape \(n_samples, n_components\)"):
        plots.plot_clusters(bayes3, faithful, proba=proba[:10])


@pytest.mark.parametrize("name", ["plot_trace_dist", "plot_rank", "plot_forest"])
def test_arviz_wrappers(bayes3, name, tmp_path):
    pc = getattr(plots, name)(bayes3)
    fig = plots.figure_of(pc)
    path = tmp_path / f"{name}.png"
    fig.savefig(path, dpi=50)
    assert path.stat().st_size > 3_000
    n_lines = sum(len(a.lines) for a in fig.axes)
    if name == "plot_trace_dist":
        # weights, means[eruptions], means[waiting]: a density and a trace per variable,
        # and in each one line per chain and component.
        assert len(fig.axes) == 6
        assert all(len(a.lines) == 2 * 3 for a in fig.axes)
        # Every panel is named (not only the last density), and no long y label crowds
        # the traces; legends say which colour is which component, which line which chain.
        titles = sorted(a.get_title(loc="left") for a in fig.axes)
        assert titles == sorted(
            f"{v}: {what}"
            for v in ("weights", "means[eruptions]", "means[waiting]")
            for what in ("density per chain", "draws")
        )
        assert all(a.get_ylabel() == "" for a in fig.axes)
        legend_titles = {lg.get_title().get_text() for lg in fig.legends}
        assert legend_titles == {"component", "chain"}
    elif name == "plot_rank":
        # One rank-ECDF panel per scalar: 3 weights + 3 x 2 means, one line per chain.
        drawn = [a for a in fig.axes if a.lines]
        assert len(drawn) == 9 and all(len(a.lines) == 2 for a in drawn)
        assert [lg.get_title().get_text() for lg in fig.legends] == ["chain"]
        assert "per chain" in fig.get_suptitle()
    else:
        # The weights' forest: three intervals (trunk and twig each) and three points.
        assert n_lines == 2 * 3
        assert fig.get_suptitle() == "Posterior of weights"
        xlabel = fig.axes[-1].get_xlabel()
        assert "posterior mean" in xlabel
        assert "thick bar = 50%" in xlabel and "thin bar = 94%" in xlabel
        assert fig.get_size_inches()[1] < 3  # three rows: no tall empty figure
    plt.close(fig)


def test_plot_forest_of_one_features_means(bayes3):
    pc = plots.plot_forest(bayes3, var_names=["means[waiting]"], combined=False)
    fig = plots.figure_of(pc)
    assert fig.get_suptitle() == "Posterior of means[waiting]"
    assert "one row per chain" in fig.axes[-1].get_xlabel()
    # 3 components x 2 chains, each a trunk and a twig.
    assert sum(len(a.lines) for a in fig.axes) == 2 * 3 * 2
    with pytest.raises(ValueError, match="unknown variable"):
        plots.plot_forest(bayes3, var_names=["means[nope]", "means[waiting]"])


def test_arviz_wrappers_reject_an_em_fit(em3):
    with pytest.raises(TypeError, match="BayesianGaussianMixture"):
        plots.plot_rank(em3)
