"""Tests of bayes_gmm.select_model / ModelSelection (issue: choosing K and the structure)."""

import threading
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from bayes_gmm import GaussianMixturePrior
from bayes_gmm.datasets import load_faithful, make_foot_sizes, make_mixture
from bayes_gmm.em import n_parameters
from bayes_gmm.selection import ModelSelection, select_model
from bayes_gmm.structures import MCLUST_MODELS

TYPES = ("full", "tied", "diag", "spherical")

# mclust 6.0.0: Mclust(faithful, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII"))$BIC,
# in mclust's sign (2 logL - p log n, higher is better). Columns: VVV, EEE, VVI, VII.
MCLUST_FAITHFUL_BIC = np.array(
    [
        [-2607.623, -2607.623, -3055.835, -4024.721],
        [-2322.192, -2325.220, -2346.065, -3458.305],
        [-2349.696, -2314.316, -2342.366, -3336.598],
        [-2351.493, -2331.223, -2343.486, -3242.826],
        [-2379.388, -2360.659, -2351.017, -3129.080],
        [-2387.016, -2347.352, -2373.469, -3038.171],
        [-2412.440, -2369.330, -2394.696, -2973.374],
        [-2442.018, -2376.104, -2413.705, -2935.082],
        [-2460.398, -2389.609, -2432.708, -2919.415],
    ]
)


@pytest.fixture(scope="module")
def faithful():
    return load_faithful()


@pytest.fixture(scope="module")
def faithful_selection(faithful):
    return select_model(faithful, covariance_types=TYPES, random_state=0)


# --------------------------------------------------------------------------- parameter counts
# Free parameters = (K - 1) weights + K d means + covariance parameters:
#   full K d (d + 1) / 2, tied d (d + 1) / 2, diag K d, spherical K.
# Written out by hand for K = 3 (and K = 1, where full = tied).
HAND_COUNTS = {
    # d: {covariance_type: (p at K=1, p at K=3)}
    1: {"full": (2, 2 + 3 + 3), "tied": (2, 2 + 3 + 1), "diag": (2, 2 + 3 + 3),
        "spherical": (2, 2 + 3 + 3)},
    2: {"full": (5, 2 + 6 + 9), "tied": (5, 2 + 6 + 3), "diag": (4, 2 + 6 + 6),
        "spherical": (3, 2 + 6 + 3)},
    5: {"full": (20, 2 + 15 + 45), "tied": (20, 2 + 15 + 15), "diag": (10, 2 + 15 + 15),
        "spherical": (6, 2 + 15 + 3)},
}  # fmt: skip


@pytest.mark.parametrize("d", [1, 2, 5])
@pytest.mark.parametrize("ctype", TYPES)
def test_parameter_counts_by_hand(d, ctype):
    p1, p3 = HAND_COUNTS[d][ctype]
    assert n_parameters(1, d, ctype) == p1
    assert n_parameters(3, d, ctype) == p3


def test_table_parameter_counts_match_mclust_df(faithful_selection):
    # mclust's df for faithful (d = 2): VVV,3 = 17, EEE,3 = 11, VVI,3 = 14, VII,3 = 11.
    t = faithful_selection.table.set_index(["covariance_type", "n_components"])
    assert t.loc[("full", 3), "n_parameters"] == 17
    assert t.loc[("tied", 3), "n_parameters"] == 11
    assert t.loc[("diag", 3), "n_parameters"] == 14
    assert t.loc[("spherical", 3), "n_parameters"] == 11


# --------------------------------------------------------------------------- Old Faithful
def test_faithful_selects_eee3_like_mclust(faithful_selection):
    sel = faithful_selection
    assert sel.best_params == ("tied", 3)
    assert sel.table["mclust"].tolist()[:9] == ["VVV"] * 9
    # mclust prints -2314.316 after stopping at a relative change of 1e-5; the limit of
    # EM is 2314.2957 (checked with tol down to 1e-10), and our tol gets within 2e-4 of it.
    assert sel.best_score == pytest.approx(2314.2957, abs=2e-4)
    assert len(sel.table) == 36 and (sel.table["reason"] == "").all()


def test_faithful_cells_at_least_as_good_as_mclust(faithful_selection):
    """Reliability: our cells reach optima at least as good as mclust's, nearly always.

    Some cells have several local optima that only a fraction of starts reach (spherical
    K=6: 1 start in 4 reaches the best), so a rare cell may miss; mclust's single start
    misses far more often (it is > 1 BIC unit worse than us in most cells).
    """
    ours = faithful_selection.criterion_table("bic")[list(TYPES)].to_numpy()
    diff = ours + MCLUST_FAITHFUL_BIC  # < 0 where we found a better optimum
    # 0.03: mclust's own tolerance leaves its values up to ~0.02 above the optimum.
    assert np.sum(diff > 0.03) <= 2
    assert np.sum(diff < -1.0) >= 15


def test_faithful_table_agrees_with_the_estimators(faithful, faithful_selection):
    sel = faithful_selection
    est = sel.best_estimator
    row = sel.table.set_index(["covariance_type", "n_components"]).loc[("tied", 3)]
    assert row["bic"] == pytest.approx(est.bic(faithful), rel=1e-12)
    assert row["aic"] == pytest.approx(est.aic(faithful), rel=1e-12)
    assert row["icl"] == pytest.approx(est.icl(faithful), rel=1e-12)
    assert row["log_likelihood"] == pytest.approx(est.log_likelihood_, rel=1e-12)
    assert list(est.feature_names_in_) == ["eruptions", "waiting"]
    assert row["n_best"] >= 1 and row["n_best"] <= row["n_starts"]
    assert bool(row["converged"])


def test_icl_at_least_bic(faithful_selection):
    t = faithful_selection.table
    assert np.all(t["icl"] >= t["bic"])
    # K = 1: every responsibility is 1, so there is no entropy penalty.
    k1 = t[t["n_components"] == 1]
    np.testing.assert_array_equal(k1["icl"], k1["bic"])


def test_icl_equals_bic_when_responsibilities_are_hard():
    # Clusters 1e4 standard deviations apart: every responsibility is exactly 0 or 1.
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(1e4, 1, (40, 2))])
    sel = select_model(X, n_components=[2], covariance_types=TYPES, random_state=0)
    t = sel.table
    np.testing.assert_array_equal(t["icl"], t["bic"])
    # ...while overlapping clusters pay a positive entropy penalty.
    Y = np.concatenate([rng.normal(0, 1, (60, 2)), rng.normal(1.5, 1, (40, 2))])
    t = select_model(Y, n_components=[2], covariance_types=TYPES, random_state=0).table
    assert np.all(t["icl"] > t["bic"] + 1.0)


def test_criteria_can_choose_aic_and_icl(faithful):
    sel = select_model(
        faithful, n_components=range(1, 5), covariance_types=TYPES, criterion="aic", random_state=0
    )
    t = sel.table
    assert sel.best_params == tuple(t.loc[t["aic"].idxmin(), ["covariance_type", "n_components"]])
    assert "delta_aic" in sel.ranking
    icl = select_model(
        faithful, n_components=range(1, 5), covariance_types=TYPES, criterion="icl", random_state=0
    )
    assert icl.best_params[1] <= sel.best_params[1]  # ICL penalizes overlap: never more K


# --------------------------------------------------------------------------- simulated K
def _spherical(seed):
    return make_mixture(300, 3, 2, covariance_type="spherical", separation=8.0, random_state=seed)


def _elongated(seed):
    # Long thin clusters (sd 3 along the line, 0.3 across), side by side 4 apart.
    rng = np.random.default_rng(seed)
    angle = rng.uniform(0, np.pi)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    cov = rot @ np.diag([9.0, 0.09]) @ rot.T
    means = np.array([[0.0, -4.0], [0.0, 0.0], [0.0, 4.0]]) @ rot.T
    return make_mixture(
        300, means=means, covariances=np.stack([cov] * 3), covariance_type="full", random_state=seed
    )


def _unequal(seed):
    return make_mixture(
        400, 3, 2, weights=[0.65, 0.25, 0.10], covariance_type="full", separation=8.0,
        random_state=seed,
    )  # fmt: skip


@pytest.mark.parametrize("shape", [_spherical, _elongated, _unequal])
def test_true_k_recovered_in_9_of_10_seeds(shape):
    hits = 0
    for seed in range(10):
        X, _, truth = shape(seed)
        sel = select_model(
            X,
            n_components=range(1, 6),
            covariance_types=(truth["covariance_type"], "spherical"),
            n_init=2,
            random_state=seed,
        )
        hits += sel.best_params[1] == len(truth["weights"])
    assert hits >= 9


# --------------------------------------------------------------------------- failed cells
def test_impossible_cell_is_a_failed_row_not_an_error():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20, 2))
    sel = select_model(X, n_components=[1, 2, 25], covariance_types=("full", "tied"))
    t = sel.table.set_index(["covariance_type", "n_components"])
    for ctype in ("full", "tied"):
        row = t.loc[(ctype, 25)]
        assert np.isnan(row["bic"]) and np.isnan(row["log_likelihood"])
        assert "distinct" in row["reason"]
        assert np.isfinite(t.loc[(ctype, 1), "bic"])
    assert sel.best_params[1] in (1, 2)
    assert len(sel.failed) == 2
    assert (ctype, 25) not in sel.estimators


def test_duplicated_rows_give_failed_and_degenerate_cells():
    # Three distinct points, each repeated: K = 4 is impossible, K = 3 collapses.
    X = np.repeat([[0.0, 0.0], [5.0, 1.0], [2.0, 7.0]], 10, axis=0)
    sel = select_model(X, n_components=[1, 3, 4], covariance_types=("full",), random_state=0)
    t = sel.table.set_index("n_components")
    assert "distinct" in t.loc[4, "reason"] and np.isnan(t.loc[4, "bic"])
    assert "degenerate" in t.loc[3, "reason"].lower() and np.isnan(t.loc[3, "bic"])
    assert np.isfinite(t.loc[1, "bic"])
    assert sel.best_params == ("full", 1)


def test_cells_with_more_parameters_than_rows_are_failed_rows():
    # Twelve standard normal points: tied K=9 (29 parameters) fits them almost exactly and
    # had the best BIC; such cells are now marked, and the winner has one component.
    X = np.random.default_rng(0).normal(size=(12, 2))
    sel = select_model(X, random_state=0)
    t = sel.table
    too_many = t["n_parameters"] >= 12
    assert too_many.any() and (~too_many & (t["n_components"] > 1)).any()
    assert t.loc[too_many, "bic"].isna().all()
    assert t.loc[too_many, "reason"].str.contains("not estimable").all()
    assert t.loc[~too_many, "reason"].fillna("").eq("").all()
    assert sel.best_params[1] == 1


def test_all_cells_failed_gives_no_winner():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 5, axis=0)
    sel = select_model(X, n_components=[3, 4], covariance_types=("diag",))
    assert sel.best_params is None and sel.best_estimator is None
    assert "no cell" in repr(sel)
    assert sel.ranking.empty


# --------------------------------------------------------------------------- 1-D
def test_one_dimension_has_two_models_without_duplicates():
    X, _ = make_foot_sizes(random_state=1)
    sel = select_model(X, n_components=range(1, 4), random_state=0)
    t = sel.table
    assert sorted(set(t["covariance_type"])) == ["full", "tied"]
    assert sorted(set(t["mclust"])) == ["E", "V"]
    assert len(t) == 6 and not t.duplicated(["covariance_type", "n_components"]).any()
    assert sel.collapsed == {"diag": "full", "spherical": "full"}
    assert sel.best_params == ("tied", 2)
    assert "1-D data" in repr(sel)
    # mclust 6.0.0 on the same draws: Mclust(x, G = 1:3, modelNames = c("E", "V"))$BIC.
    mclust = np.array([[-8299.824743, -8299.824743], [-7800.632088, -7806.107914],
                       [-7813.408291, -7827.093519]])  # fmt: skip
    ours = sel.criterion_table("bic")[["tied", "full"]].to_numpy()
    np.testing.assert_allclose(ours[:2, 0], -mclust[:2, 0], atol=1e-3)  # E,1 and E,2: equal
    assert np.all(ours <= -mclust + 0.02)  # elsewhere at least as good (mclust stops early)
    # Only "spherical" asked for: it stands for V itself.
    only = select_model(X, n_components=[2], covariance_types=("spherical",), random_state=0)
    assert only.table["covariance_type"].tolist() == ["spherical"]
    assert only.table["mclust"].tolist() == ["V"]


# --------------------------------------------------------------------------- API
def test_reproducible_with_random_state(faithful):
    kw = dict(n_components=range(1, 5), covariance_types=["EII", "VEV", "full"], random_state=7)
    a = select_model(faithful, **kw).table
    b = select_model(faithful, **kw).table
    pd.testing.assert_frame_equal(a.drop(columns="fit_time"), b.drop(columns="fit_time"))


@pytest.mark.parametrize("data", ["faithful", "duplicated rows"])
def test_table_does_not_depend_on_the_number_of_threads(faithful, data, monkeypatch):
    """Cells run on several threads (each once the cells it starts from are done) give the
    table of one thread, number for number; degenerate cells keep their reasons."""
    from bayes_gmm import _gaussian, selection

    if data == "faithful":
        X = faithful
        kw = dict(n_components=range(1, 6), covariance_types=["EII", "VII", "EEE", "VEV", "VVV"])
    else:  # three points, each repeated: K = 3 collapses in every structure
        X = np.repeat([[0.0, 0.0], [5.0, 1.0], [2.0, 7.0], [1.0, 1.0]], [10, 10, 10, 1], axis=0)
        kw = dict(n_components=range(1, 5), covariance_types=["EII", "EEE", "VVI", "VVV"])
    threads = set()
    fit_cell = selection._fit_cell

    def spy(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return fit_cell(*args, **kwargs)

    monkeypatch.setattr(selection, "_fit_cell", spy)
    tables = {}
    for workers in (1, 3):
        monkeypatch.setattr(_gaussian, "N_WORKERS", workers)
        threads.clear()
        tables[workers] = select_model(X, random_state=3, **kw).table.drop(columns="fit_time")
        if workers == 1:
            assert threads == {threading.current_thread().name}
        else:
            assert len(threads) > 1 and any(t.startswith("bayes_gmm_grid") for t in threads)
    pd.testing.assert_frame_equal(tables[1], tables[3])
    if data != "faithful":
        assert tables[3]["reason"].str.contains("degenerate").any()


def test_cells_run_after_the_cells_they_start_from():
    from bayes_gmm.selection import _in_dependency_order

    keys = list(range(60))

    def needs(k):  # a key outside ``keys`` (-1) is no dependency
        return {k - 1, k // 3 - 1} if k % 4 else {k // 2 - 1}

    finished, started_after, finishing = [], {}, []

    def run(k):
        started_after[k] = set(finished)  # what had finished when k started
        time.sleep(0.001 * (k % 3))
        return 2 * k

    def finish(k, result):
        finishing.append(k)
        assert result == 2 * k and finishing == [k]  # never two at once
        time.sleep(0.0005)
        finished.append(k)
        finishing.remove(k)

    _in_dependency_order(keys, needs, run, finish, workers=4)
    assert sorted(finished) == keys
    for k in keys:
        assert {n for n in needs(k) if n >= 0} <= started_after[k]
    finished.clear()
    _in_dependency_order(keys, needs, run, finish, workers=1)
    assert finished == keys  # one worker: in the given order

    def fail_at_7(k):
        if k == 7:
            raise RuntimeError("cell 7 failed")
        return run(k)

    finished.clear()
    with pytest.raises(RuntimeError, match="cell 7"):
        _in_dependency_order(keys, needs, fail_at_7, finish, workers=2)
    after_7 = {k for k in keys if 7 in needs(k)}
    assert after_7 and not after_7 & {7, *finished}


def test_integer_sample_weight_equals_repeated_rows(faithful):
    X = faithful.to_numpy()
    weight = np.random.default_rng(0).integers(1, 4, len(X))
    kw = dict(n_components=[1, 2], covariance_types=("full", "diag"), random_state=0)
    weighted = select_model(X, sample_weight=weight, **kw).table
    repeated = select_model(np.repeat(X, weight, axis=0), **kw).table
    for col in ("log_likelihood", "bic", "aic", "icl"):
        np.testing.assert_allclose(weighted[col], repeated[col], rtol=1e-7)


def test_map_prior_grid(faithful):
    kw = dict(n_components=range(1, 4), covariance_types=TYPES, random_state=0)
    sel = select_model(faithful, prior=GaussianMixturePrior(), **kw)
    mle = select_model(faithful, **kw)
    assert sel.best_estimator.prior_ is not None
    # The table holds the data log-likelihood, which the MLE maximizes.
    assert np.all(sel.table["log_likelihood"] <= mle.table["log_likelihood"] + 1e-6)
    assert sel.best_params[1] in (2, 3)


def test_repr_html_and_plot(faithful_selection):
    sel = faithful_selection
    text = repr(sel)
    assert "best: covariance_type='tied' (EEE), n_components=3" in text
    assert "delta_bic" in text
    html = sel._repr_html_()
    assert "<table" in html and "EEE" in html
    ax = sel.plot()
    assert len(ax.lines) == 5  # four structures + the circled winner
    assert ax.get_ylabel().startswith("BIC")
    np.testing.assert_allclose(ax.lines[1].get_ydata(), sel.table["bic"][9:18])
    plt.close(ax.figure)
    grid = sel.criterion_table()
    assert grid.shape == (9, 4) and list(grid.columns) == list(TYPES)
    assert isinstance(sel, ModelSelection)


def test_progress_bar_only_when_asked(faithful, capsys):
    select_model(faithful, n_components=[1, 2], covariance_types=("tied",), random_state=0)
    assert capsys.readouterr().err == ""
    select_model(
        faithful, n_components=[1, 2], covariance_types=("tied",), random_state=0, verbose=True
    )
    err = capsys.readouterr().err
    assert "select_model" in err and "2/2" in err
    assert "compiled EM" not in err  # the kernel is loaded in this process by now


def test_progress_bar_says_when_the_kernel_loads(faithful, capsys, monkeypatch):
    from bayes_gmm import selection

    monkeypatch.setattr(selection, "kernel_loaded", lambda: False)
    select_model(faithful, n_components=[1], covariance_types=("tied",), verbose=True)
    err = capsys.readouterr().err
    assert "loading the compiled EM kernel" in err and "compiles it, ~7 s" in err


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"criterion": "bick"}, "criterion must be one of"),
        ({"covariance_types": ("full", "vvv")}, "unknown: \\['vvv'\\]"),
        ({"covariance_types": ()}, "it is empty"),
        ({"n_components": [0, 1]}, "positive integers"),
        ({"n_components": [2.5]}, "positive integers"),
        ({"n_components": []}, "it is empty"),
        ({"n_components": "3"}, "positive integers"),
        ({"n_init": 0}, "n_init must be an integer >= 1"),
        ({"tol": -1.0}, "tol must be"),
        ({"sample_weight": -np.ones(272)}, "negative"),
    ],
)
def test_invalid_arguments_say_what_to_do(faithful, kwargs, match):
    with pytest.raises(ValueError, match=match):
        select_model(faithful, **kwargs)


def test_invalid_data(faithful):
    X = faithful.to_numpy().copy()
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        select_model(X)
    with pytest.raises(TypeError, match="prior must be"):
        select_model(faithful, prior={"kappa": 1})
    # Refused before the grid runs (it used to fail every cell with this reason instead).
    with pytest.raises(ValueError, match="weight_concentration >= 1"):
        select_model(faithful, prior=GaussianMixturePrior(weight_concentration=0.5))


# --------------------------------------------------------------------------- strategies
def test_refine_all_runs_every_cell_to_tol(faithful):
    kw = dict(n_components=range(1, 5), covariance_types=TYPES, random_state=0)
    some = select_model(faithful, **kw).table
    every = select_model(faithful, refine="all", **kw).table
    assert (every["tol"] == 1e-7).all()
    assert (some["tol"] == 1e-7).sum() < len(some)  # only the contenders were refined
    # Refining only improves a cell, and never changes the winner here.
    assert np.all(every["bic"] <= some["bic"] + 1e-9)
    assert every.loc[every["bic"].idxmin(), "n_components"] == 3
    with pytest.raises(ValueError, match="refine"):
        select_model(faithful, refine="some")


def test_subsampled_exploration_matches_direct_fits(monkeypatch):
    """Above SUBSAMPLE_SIZE rows the starts are explored on a subsample, then run on all."""
    import bayes_gmm.selection as selection_module
    from bayes_gmm import GaussianMixture

    monkeypatch.setattr(selection_module, "SUBSAMPLE_SIZE", 400)
    X, _, _ = make_mixture(3000, 3, 2, covariance_type="full", random_state=4)
    sel = select_model(X, n_components=[2, 3, 4], covariance_types=("full",), random_state=0)
    assert sel.best_params == ("full", 3)
    # The winner is the optimum a many-start fit on all the data finds.
    direct = GaussianMixture(3, tol=1e-9, max_iter=2000, n_init=10, random_state=0).fit(X)
    assert sel.best_score == pytest.approx(direct.bic(X), abs=0.01)
    np.testing.assert_allclose(sel.best_estimator.means_, direct.means_, atol=1e-3)


def test_batched_starts_are_used_and_equal_one_by_one_fits(faithful, monkeypatch):
    """The grid runs a cell's starts as one batched EM; its table equals one-by-one fits."""
    from bayes_gmm import _batched_em, selection

    calls = []
    one_by_one = selection._fit_quietly
    monkeypatch.setattr(selection, "_fit_quietly", lambda *a: calls.append(1) or one_by_one(*a))
    kw = dict(n_components=range(1, 5), covariance_types=TYPES, random_state=0)
    batched = select_model(faithful, **kw).table
    assert len(calls) <= 2  # nearly every start went through the batch
    monkeypatch.setattr(_batched_em, "MAX_BATCH_ELEMENTS", 0)  # nothing fits in a batch
    calls.clear()
    single = select_model(faithful, **kw).table
    assert len(calls) > 50
    numbers = ["log_likelihood", "bic", "aic", "icl"]
    np.testing.assert_allclose(batched[numbers], single[numbers], rtol=1e-10)
    assert batched["n_best"].tolist() == single["n_best"].tolist()


@pytest.mark.parametrize("K", [1, 3, 9])
@pytest.mark.parametrize("d", [1, 2, 5])
def test_partitions_equal_scikit_learn_kmeans(K, d):
    """The grid's own k-means and k-means++ give scikit-learn's partitions, draw for draw."""
    from sklearn.cluster import KMeans
    from sklearn.cluster import kmeans_plusplus as sklearn_kmeans_plusplus

    from bayes_gmm._grid_starts import kmeans_plusplus, lloyd

    X, _, _ = make_mixture(400, 4, d, random_state=d)
    w = np.random.default_rng(K).integers(1, 4, size=len(X)).astype(float)
    for seed in range(5):
        ref = KMeans(K, n_init=1, random_state=seed).fit(X, sample_weight=w).labels_
        Xm = X - X.mean(axis=0)
        ours = lloyd(Xm, w, kmeans_plusplus(Xm, w, K, np.random.RandomState(seed)))
        np.testing.assert_array_equal(ours, ref)
        centers, _ = sklearn_kmeans_plusplus(X, K, random_state=seed, sample_weight=w)
        np.testing.assert_allclose(
            kmeans_plusplus(X, w, K, np.random.RandomState(seed)), centers, rtol=0, atol=0
        )


def test_lloyd_moves_an_emptied_cluster_to_the_farthest_row():
    from bayes_gmm._grid_starts import lloyd

    X = np.array([[0.0], [1.0], [10.0], [11.0], [30.0]])
    # The middle center is nobody's nearest: it is moved onto the row farthest from its
    # center (30), and Lloyd then settles on three clusters.
    labels = lloyd(X, np.ones(5), np.array([[0.5], [100.0], [10.5]]))
    assert len(np.unique(labels)) == 3
    assert labels[4] != labels[3] and labels[0] == labels[1] and labels[2] == labels[3]


# --------------------------------------------------------------------------- mclust's 14 models
MCLUST_DATA = Path(__file__).parent / "data" / "mclust"


@pytest.fixture(scope="module", params=["faithful", "iris"])
def mclust_grid(request):
    """All 14 models x K = 1..9 on a data set, with mclust 6's BIC table for it."""
    X = pd.read_csv(MCLUST_DATA / f"{request.param}.csv")
    mclust = pd.read_csv(MCLUST_DATA / f"{request.param}.bic.csv").set_index("G")
    return request.param, X, mclust, select_model(X, covariance_types="all", random_state=0)


def test_every_cell_matches_or_beats_mclust(mclust_grid):
    _, _, mclust, sel = mclust_grid
    ours = sel.criterion_table("bic")[list(MCLUST_MODELS)]
    assert list(ours.columns) == list(mclust.columns) and list(ours.index) == list(mclust.index)
    fitted = mclust.notna().to_numpy()
    # Our sign: lower is better; mclust's BIC is minus ours.
    diff = ours.to_numpy() + mclust.to_numpy()
    assert np.all(diff[fitted] <= 0.1), ours.where(diff > 0.1)
    assert np.all(np.isfinite(ours.to_numpy()[fitted]))
    # mclust stops at a relative change of 1e-5 and starts once: we are often far better.
    assert np.sum(diff[fitted] < -1.0) >= 40
    assert len(sel.table) == 126 and "hc" in set(sel.table["best_start"])


def test_winner_is_mclusts(mclust_grid):
    name, _, _, sel = mclust_grid
    best = {"faithful": ("EEE", 3, 2314.316), "iris": ("VEV", 2, 561.729)}[name]
    assert sel.best_params == best[:2]
    assert sel.best_score <= best[2]
    # The best cell BayesianGaussianMixture can sample: VEV has no posterior, VVV has.
    assert sel.best_posterior_params() == {"faithful": ("EEE", 3), "iris": ("VVV", 2)}[name]
    assert sel.table["mclust"].tolist()[::9] == list(MCLUST_MODELS)
    assert "(VEV)" not in repr(sel)  # a model named by its code is not repeated
    assert f"best: covariance_type={best[0]!r}" in repr(sel)
    ax = sel.plot()  # mclust's BIC plot: 14 lines and the circled winner
    assert len(ax.lines) == 15 and [ln.get_label() for ln in ax.lines[:14]] == list(MCLUST_MODELS)
    plt.close(ax.figure)
    assert sel.criterion_table().shape == (9, 14)


def test_default_grid_is_mclusts_14_models(mclust_grid):
    """Without covariance_types: all 14 models under mclust's codes (as Mclust), for d >= 2."""
    name, X, _, everything = mclust_grid
    sel = select_model(X, random_state=0)
    assert list(dict.fromkeys(sel.table["covariance_type"])) == list(MCLUST_MODELS)
    assert (sel.table["covariance_type"] == sel.table["mclust"]).all()
    pd.testing.assert_frame_equal(
        sel.table.drop(columns="fit_time"), everything.table.drop(columns="fit_time")
    )
    assert sel.best_params == {"faithful": ("EEE", 3), "iris": ("VEV", 2)}[name]
    # Named as given: scikit-learn's names stay scikit-learn's, with mclust's beside them.
    four = select_model(X, n_components=range(1, 4), covariance_types=TYPES, random_state=0)
    assert list(dict.fromkeys(four.table["covariance_type"])) == list(TYPES)
    assert list(four.criterion_table().columns) == list(TYPES)


def test_one_dimension_all_models_are_e_and_v():
    X, _ = make_foot_sizes(random_state=1)
    sel = select_model(X, n_components=range(1, 4), covariance_types="all", random_state=0)
    t = sel.table
    assert t["covariance_type"].unique().tolist() == ["EII", "VII"]
    assert t["mclust"].unique().tolist() == ["E", "V"]
    assert sel.collapsed["VVV"] == "VII" and sel.collapsed["EEE"] == "EII"
    # The same models as the four scikit-learn names fit (mclust's E and V).
    four = select_model(X, n_components=range(1, 4), random_state=0).criterion_table()
    np.testing.assert_allclose(
        sel.criterion_table()[["EII", "VII"]].to_numpy(),
        four[["tied", "full"]].to_numpy(),
        atol=0.02,
    )


def test_hierarchical_start_is_mclusts():
    """Model-based hc (VVV on SVD-transformed data) gives mclust's partitions."""
    from sklearn.metrics import adjusted_rand_score

    from bayes_gmm._hc import cut, merge_tree, svd_transform

    for name, exact_up_to in (("iris", 9), ("faithful", 5)):
        X = pd.read_csv(MCLUST_DATA / f"{name}.csv").to_numpy()
        theirs = pd.read_csv(MCLUST_DATA / f"{name}.hclass.csv").to_numpy()
        merges = merge_tree(svd_transform(X))
        for K in range(1, 10):
            ari = adjusted_rand_score(theirs[:, K - 1], cut(merges, K))
            # faithful's rounded values tie merge costs up to rounding beyond K = 5.
            assert ari == 1.0 if K <= exact_up_to else ari > 0.98, (name, K, ari)


def test_names_as_given_and_a_model_named_twice(faithful):
    sel = select_model(
        faithful, n_components=[2, 3], covariance_types=["VEV", "full", "VVV"], random_state=0
    )
    t = sel.table
    assert t["covariance_type"].tolist() == ["VEV", "VEV", "full", "full"]
    assert t["mclust"].tolist() == ["VEV", "VEV", "VVV", "VVV"]
    assert sel.collapsed == {"VVV": "full"}
    assert "'VVV' is the same model as 'full'" in repr(sel)
    assert sel.estimators[("VEV", 3)].covariance_type == "VEV"
    ax = sel.plot()
    assert [ln.get_label() for ln in ax.lines[:2]] == ["VEV", "full (VVV)"]
    plt.close(ax.figure)


def test_prior_grid_fails_models_without_a_prior_with_a_reason(faithful):
    sel = select_model(
        faithful,
        n_components=[2],
        covariance_types=["VEV", "VVE", "EEV"],
        prior=GaussianMixturePrior(),
        random_state=0,
    )
    t = sel.table.set_index("covariance_type")
    assert "no conjugate prior for VVE" in t.loc["VVE", "reason"] and np.isnan(t.loc["VVE", "bic"])
    assert np.isfinite(t.loc[["VEV", "EEV"], "bic"]).all()


def test_degenerate_cells_of_the_new_models_are_failed_rows():
    # Three distinct points, each repeated: K = 3 collapses for every model.
    X = np.repeat([[0.0, 0.0], [5.0, 1.0], [2.0, 7.0]], 10, axis=0)
    sel = select_model(X, n_components=[1, 3], covariance_types="all", random_state=0)
    t = sel.table.set_index(["covariance_type", "n_components"])
    for model in MCLUST_MODELS:
        assert np.isnan(t.loc[(model, 3), "bic"]) and t.loc[(model, 3), "reason"]
        assert np.isfinite(t.loc[(model, 1), "bic"])
    assert sel.best_params[1] == 1
