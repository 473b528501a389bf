"""BayesianGaussianMixture end to end: recovery, initialization, warnings, I/O, membership.

Fitted models are shared through module-scoped fixtures; settings are small (few draws)
but every assertion is about behaviour: truths inside intervals, equality after a
round trip, warnings present or absent.
"""

import json
import warnings

import numpy as np
import pytest

from bayes_gmm.bayesian import BayesianGaussianMixture
from bayes_gmm.datasets import make_foot_sizes
from bayes_gmm.diagnostics import SamplingWarning

TRUE_2D_MEANS = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])


def _three_blobs(seed=0, n=(167, 167, 166)):
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [rng.normal(m, 1.0, (k, 2)) for m, k in zip(TRUE_2D_MEANS, n, strict=True)]
    )


def _fit_quietly(model, X, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(X, **kwargs)
    return model, [w for w in caught if issubclass(w.category, SamplingWarning)]


@pytest.fixture(scope="module")
def foot():
    X, labels = make_foot_sizes(random_state=0)
    model = BayesianGaussianMixture(2, draws=500, tune=500, chains=4, random_state=0)
    model, caught = _fit_quietly(model, X)
    return model, X, labels, caught


@pytest.fixture(scope="module")
def blobs():
    X = _three_blobs()
    model = BayesianGaussianMixture(3, draws=1000, tune=500, chains=4, random_state=1)
    model, caught = _fit_quietly(model, X)
    return model, X, caught


def _interval(model, name, prob=0.94):
    post = model.idata_["posterior"][name]
    lo, hi = post.quantile([(1 - prob) / 2, (1 + prob) / 2], dim=("chain", "draw")).values
    return lo, hi


def test_foot_sizes_recovery(foot):
    model, X, labels, caught = foot
    assert caught == [], [str(w.message) for w in caught]
    lo, hi = _interval(model, "means")
    truth = np.array([[240.0], [270.0]])
    assert np.all((lo <= truth) & (truth <= hi)), (lo, hi)
    lo, hi = _interval(model, "weights")
    assert np.all((lo <= [0.7, 0.3]) & ([0.7, 0.3] <= hi)), (lo, hi)
    # The standard deviations: the intervals hold what the labelled groups show (this
    # sample's male sd is 5.4, below the generating 6, so the generating value is no test).
    lo, hi = _interval(model, "covariances")
    sd = np.sqrt(np.stack([lo, hi]).reshape(2, 2))
    group_sd = np.array([X[labels == g, 0].std() for g in (0, 1)])
    assert np.all((sd[0] <= group_sd) & (group_sd <= sd[1])), (sd, group_sd)


def test_two_d_recovery_and_clean_diagnostics(blobs):
    model, _, caught = blobs
    assert caught == [], [str(w.message) for w in caught]
    report = model.diagnostics()
    assert report.ok and report.max_rhat <= 1.01 and report.n_divergent == 0
    lo, hi = _interval(model, "means")
    assert np.all((lo <= TRUE_2D_MEANS) & (TRUE_2D_MEANS <= hi))
    lo, hi = _interval(model, "weights")
    assert np.all((lo <= 1 / 3) & (1 / 3 <= hi))


def test_idata_groups_and_summary(blobs):
    model, X, _ = blobs
    tree = model.idata_
    for group in ("posterior", "sample_stats", "observed_data", "log_likelihood", "em_estimate"):
        assert group in tree.children
    post = tree["posterior"]
    assert post["weights"].shape == (4, 1000, 3)
    assert post["means"].shape == (4, 1000, 3, 2)
    assert post["covariances"].shape == (4, 1000, 3, 2, 2)
    np.testing.assert_allclose(post["weights"].sum("component"), 1.0)
    assert tree["log_likelihood"]["X"].shape == (4, 1000, X.shape[0])
    table = model.summary()
    assert {"mean", "sd", "r_hat", "ess_bulk"} <= set(table.columns)
    assert len(table) == 3 + 6 + 9  # each covariance entry once (upper triangle)
    # Every stage is timed, the pointwise log-likelihood included, and total comes last.
    stages = ("em", "build", "compile", "sample", "relabel", "diagnostics", "output")
    assert set(model.timings_) == {*stages, "total"}
    assert model.timings_["total"] >= sum(model.timings_[s] for s in stages)
    assert json.loads(tree.attrs["bayes_gmm"])["timings"] == model.timings_


def test_predict_proba_is_the_draw_average(blobs):
    from scipy.stats import multivariate_normal

    model, X, _ = blobs
    weights, means, covs = model.posterior_parameters(full=True)
    pick = slice(0, None, 97)  # a subset of draws, averaged by hand
    proba = np.zeros((5, 3))
    for w, m, c in zip(weights[pick], means[pick], covs[pick], strict=True):
        dens = np.array([w[k] * multivariate_normal(m[k], c[k]).pdf(X[:5]) for k in range(3)]).T
        proba += dens / dens.sum(axis=1, keepdims=True)
    proba /= len(weights[pick])
    full = model.predict_proba(X[:5])
    np.testing.assert_allclose(full.sum(axis=1), 1.0)
    # The subset average approximates the full average; these points are unambiguous.
    np.testing.assert_allclose(full, proba, atol=1e-3)
    assert np.all(model.predict(TRUE_2D_MEANS) == [0, 1, 2])
    # Near a point every draw gives probability ~1, whatever the density; between the
    # blobs the draws disagree, and the average over all of them by hand is the same
    # number to rounding (pdf products here, log-sum-exp in predict_proba).
    between = np.array([[-2.0, 2.0], [0.0, 0.0], [2.0, 2.0]])
    dens = np.stack(
        [
            [w[k] * multivariate_normal(m[k], c[k]).pdf(between) for k in range(3)]
            for w, m, c in zip(weights, means, covs, strict=True)
        ]
    )  # (S, K, 3)
    by_hand = (dens / dens.sum(axis=1, keepdims=True)).mean(axis=0).T
    assert by_hand.max() < 0.99  # the points are ambiguous
    np.testing.assert_allclose(model.predict_proba(between), by_hand, rtol=0, atol=1e-12)


def test_membership_intervals(blobs):
    model, _, _ = blobs
    between = np.array([[-2.0, 2.0], [-4.0, 0.0]])  # on the border of 0 and 1; in 0
    mem = model.membership(between, prob=0.9)
    mean, lower, upper = (mem[k].values for k in ("mean", "lower", "upper"))
    assert mean.shape == (2, 3)
    assert np.all(lower <= mean + 1e-12) and np.all(mean <= upper + 1e-12)
    np.testing.assert_allclose(mean, model.predict_proba(between), atol=1e-12)
    # The border point is uncertain, the centre is not.
    assert upper[0, 0] - lower[0, 0] > 0.05
    assert lower[1, 0] > 0.99


def test_most_likely_component_matches_membership(blobs):
    import pandas as pd

    model, X, _ = blobs
    X = X[::25]  # 20 points, some of them between two blobs
    mem = model.membership(X, prob=0.8)
    mean, lower, upper = (mem[k].values for k in ("mean", "lower", "upper"))
    best = mean.argmax(axis=1)
    rows = np.arange(len(X))
    table = model.most_likely_component(X, prob=0.8)
    assert list(table.columns) == ["component", "probability", "lower", "upper"]
    assert table.attrs["prob"] == 0.8
    pd.testing.assert_index_equal(table.index, pd.RangeIndex(len(X)))
    np.testing.assert_array_equal(table["component"], best)
    np.testing.assert_array_equal(table["component"], model.predict(X))
    # Same draws, same arithmetic: equal to rounding.
    np.testing.assert_allclose(table["probability"], mean[rows, best], rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["lower"], lower[rows, best], rtol=0, atol=1e-12)
    np.testing.assert_allclose(table["upper"], upper[rows, best], rtol=0, atol=1e-12)
    # A given membership is used as is, and a DataFrame's index is kept.
    frame = pd.DataFrame(X, index=pd.Index(np.arange(len(X)) * 10 + 3, name="id"))
    given = model.most_likely_component(frame, prob=0.8, membership=mem)
    pd.testing.assert_index_equal(given.index, frame.index)
    np.testing.assert_array_equal(given.to_numpy(), table.to_numpy())
    with pytest.raises(ValueError, match="holds 80% intervals, not 90%"):
        model.most_likely_component(X, prob=0.9, membership=mem)
    with pytest.raises(ValueError, match="membership has shape"):
        model.most_likely_component(X[:5], prob=0.8, membership=mem)


def test_score_samples_and_loo(blobs):
    model, X, _ = blobs
    s = model.score_samples(X[:50])
    ll = model.idata_["log_likelihood"]["X"].values.reshape(-1, X.shape[0])[:, :50]
    expected = np.logaddexp.reduce(ll, axis=0) - np.log(ll.shape[0])
    np.testing.assert_allclose(s, expected, rtol=1e-10)
    loo = model.loo()
    assert np.isfinite(loo.elpd) and abs(loo.elpd - np.sum(model.score_samples(X))) < 20
    # Row by row chunks (what loo does when the pointwise log-likelihood is too large to
    # store) give the same estimate: each row's term uses that row's column alone.
    whole = model.loo(pointwise=True)
    chunked = model.loo(pointwise=True, chunk_rows=37)
    # Rounding only (the densities of a chunk's rows are computed about its own centre).
    np.testing.assert_allclose(chunked.elpd_i, whole.elpd_i, rtol=1e-10)
    np.testing.assert_allclose(chunked.pareto_k, whole.pareto_k, rtol=0, atol=1e-8)
    for name in ("elpd", "se", "p"):
        np.testing.assert_allclose(getattr(chunked, name), getattr(whole, name), rtol=1e-10)
    with pytest.raises(ValueError, match="chunk_rows"):
        model.loo(chunk_rows=0)


def test_posterior_predictive(blobs):
    model, X, _ = blobs
    ppc = model.sample_posterior_predictive(n_draws=50, random_state=0)
    Xrep = ppc["X"].values
    assert Xrep.shape == (4, 50, X.shape[0], 2)
    # Replicates look like the data: overall means and sds agree.
    np.testing.assert_allclose(Xrep.mean(axis=(0, 1, 2)), X.mean(axis=0), atol=0.3)
    np.testing.assert_allclose(Xrep.std(axis=(0, 1, 2)), X.std(axis=0), rtol=0.05)
    assert "posterior_predictive" in model.idata_.children


@pytest.mark.parametrize("suffix", [".zarr", ".nc"])
def test_save_load_predicts_identically(blobs, tmp_path, suffix):
    model, X, _ = blobs
    path = model.save(tmp_path / f"model{suffix}")
    loaded = BayesianGaussianMixture.load(path)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))
    np.testing.assert_array_equal(loaded.score_samples(X[:20]), model.score_samples(X[:20]))
    assert loaded.get_params() == model.get_params()
    assert loaded.diagnostics().max_rhat == model.diagnostics().max_rhat
    np.testing.assert_array_equal(loaded.em_.means_, model.em_.means_)
    # Saving again over an existing path replaces it and leaves no temporary files.
    loaded.save(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_failed_save_leaves_nothing(blobs, tmp_path, monkeypatch):
    import xarray as xr

    model, _, _ = blobs

    def broken(self, *args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(xr.DataTree, "to_zarr", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(tmp_path / "model.zarr")
    assert list(tmp_path.iterdir()) == []


def test_initialization_is_honored():
    """With a handful of tuning steps the first draws are still next to the EM estimate."""
    X, _ = make_foot_sizes(random_state=3)
    model = BayesianGaussianMixture(2, draws=5, tune=3, chains=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        model.fit(X)
    first = model.idata_["posterior"]["means"].isel(draw=0).values[..., 0]  # (chain, K)
    em = model.em_.means_[:, 0]
    # Posterior sd of each mean is sd_k / sqrt(n_k), about 0.3 mm; a default start
    # (all means at 0) would be 250 mm away.
    assert np.all(np.abs(first - em) < 3.0), (first, em)


def test_fixed_random_state_gives_identical_draws():
    X = _three_blobs(seed=5, n=(40, 40, 40))
    kw = dict(draws=30, tune=30, chains=2, random_state=7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SamplingWarning)
        a = BayesianGaussianMixture(3, **kw).fit(X)
        b = BayesianGaussianMixture(3, **kw).fit(X)
        c = BayesianGaussianMixture(3, **{**kw, "random_state": 8}).fit(X)
    pa, pb = a.idata_["posterior"], b.idata_["posterior"]
    np.testing.assert_array_equal(pa["means"].values, pb["means"].values)
    np.testing.assert_array_equal(pa["covariances"].values, pb["covariances"].values)
    assert not np.array_equal(pa["means"].values, c.idata_["posterior"]["means"].values)
    # Chains start from distinct (jittered) points.
    assert not np.array_equal(pa["means"].values[0], pa["means"].values[1])


def test_bad_run_warns():
    X = _three_blobs(seed=2, n=(30, 30, 30))
    model = BayesianGaussianMixture(3, draws=20, tune=0, chains=2, random_state=0)
    with pytest.warns(SamplingWarning) as record:
        model.fit(X)
    text = " ".join(str(w.message) for w in record)
    assert "effective sample size" in text and "increase draws" in text
    assert not model.diagnostics().ok
    assert all(w.filename == __file__ for w in record)  # points at the caller of fit


def test_fitted_model_shows_a_readable_summary(blobs):
    model = blobs[0]
    html = model._repr_html_()
    assert "3 component(s)" in html and "weights[0]" in html and "means[2" in html
    assert "covariances" not in html  # the table stays short: weights and means
    assert model._repr_mimebundle_()["text/html"] == html
    assert "diagnostics ok" in repr(model)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"draws": 0}, "draws must be an integer >= 1"),
        ({"chains": 0}, "chains must be an integer >= 1"),
        ({"tune": -1}, "tune must be an integer >= 0"),
        ({"draws": 2.5}, "draws must be an integer"),
        ({"target_accept": 1.0}, "target_accept must be a number strictly between 0 and 1"),
        ({"target_accept": 0}, "target_accept"),
        ({"relabel": "sorted"}, "relabel must be one of"),
        ({"covariance_type": "VEV"}, "The posterior supports covariance_type"),
        ({"init_jitter": -1.0}, "init_jitter"),
        ({"mass_matrix": "dense"}, "mass_matrix must be one of"),
        ({"mass_matrix": None}, "mass_matrix must be one of"),
        ({"cores": 0}, "cores must be an integer >= 1"),
        ({"n_components": 0}, "n_components must be >= 1"),
        ({"n_components": 5000}, "n_samples >= n_components"),
    ],
)
def test_bad_settings(kwargs, match):
    X = _three_blobs(n=(10, 10, 10))
    params = {"n_components": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        BayesianGaussianMixture(**params).fit(X)


def test_bad_prior_type():
    with pytest.raises(TypeError, match="GaussianMixturePrior"):
        BayesianGaussianMixture(2, prior={"alpha": 1}).fit(_three_blobs(n=(10, 10, 10)))


@pytest.mark.parametrize(
    ("X", "match"),
    [
        (np.array([[1.0, np.nan], [2.0, 3.0], [1.0, 1.0]]), "NaN"),
        (np.array([[1.0, np.inf], [2.0, 3.0], [1.0, 1.0]]), "infinite"),
        (np.empty((0, 2)), "empty"),
        (np.array([["a", "b"], ["c", "d"]]), "numbers"),
        (np.array([[1.0, 2.0]]), "at least 2"),
    ],
)
def test_bad_input(X, match):
    with pytest.raises(ValueError, match=match):
        BayesianGaussianMixture(1).fit(X)


def test_bad_predict_input(blobs):
    model, _, _ = blobs
    with pytest.raises(ValueError, match="3 features, but this model was fitted with 2"):
        model.predict_proba(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="prob must be"):
        model.membership(np.zeros((2, 2)), prob=1.5)
    with pytest.raises(ValueError, match="negative"):
        BayesianGaussianMixture(2).fit(_three_blobs(n=(5, 5, 5)), sample_weight=-np.ones(15))


def test_unfitted_model_says_so():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        BayesianGaussianMixture(2).predict(np.zeros((2, 2)))


def test_n_components_none_runs_the_selection_grid():
    X = _three_blobs(seed=4, n=(60, 60, 60))
    model = BayesianGaussianMixture(draws=300, tune=300, chains=2, random_state=0)
    model, _ = _fit_quietly(model, X)
    assert model.selection_ is not None
    assert model.selection_.best_params == (model.covariance_type_, model.n_components_)
    assert model.n_components_ == 3
    assert model.idata_["posterior"].sizes["component"] == 3
    # The chains start from the grid's winner: the same EM estimate.
    np.testing.assert_allclose(model.em_.means_, model.selection_.best_estimator.means_)


def test_n_components_none_samples_the_best_supported_model_and_says_so(monkeypatch):
    """Iris under the prior: the grid's winner is VEV,2, whose posterior is not supported;
    the fit samples the best supported cell (full, K=2) and names both models."""
    import bayes_gmm.bayesian as bayesian
    from bayes_gmm.datasets import load_iris

    X, _ = load_iris()
    sampled = []

    def stop(model, *args, **kwargs):  # what would be sampled; no need to sample it
        sampled.append(model)
        raise RuntimeError("stop before sampling")

    monkeypatch.setattr(bayesian, "sample_nuts", stop)
    model = BayesianGaussianMixture(random_state=0)
    message = (
        r"best model by BIC is VEV with K = 2 \(BIC 580\.81\), whose posterior is not "
        r"supported \(the closest supported structure is full\); sampling the best supported "
        r"model instead: full with K = 2 \(BIC 592\.\d\d, \+11\.\d\d\)"
    )
    with pytest.warns(UserWarning, match=message) as caught, pytest.raises(RuntimeError):
        model.fit(X)
    assert [w.filename for w in caught if "VEV" in str(w.message)] == [__file__]
    (built,) = sampled
    assert len(built.coords["component"]) == 2
    assert {"precision_chi2", "precision_offdiag"} <= set(built.named_vars)  # full (Wishart)
    # Every mclust model with a conjugate prior was in the grid, under the prior.
    grid = bayesian._grid_structures(4)
    assert grid == ("EII", "spherical", "EEI", "VEI", "EVI", "diag", "tied", "EEV", "VEV", "full")
    assert bayesian._grid_structures(1) == ("full", "tied", "diag", "spherical")


@pytest.mark.parametrize("ctype", ["tied", "diag", "spherical"])
def test_other_covariance_types_recover_the_means(ctype):
    # Scaled by 3 (true variance 9), so a variance reported as a standard deviation (3)
    # or a precision (1/9) fails.
    X = 3.0 * _three_blobs(seed=6, n=(80, 80, 80))
    model = BayesianGaussianMixture(
        3, covariance_type=ctype, draws=600, tune=400, chains=2, random_state=0
    )
    model, _ = _fit_quietly(model, X)
    lo, hi = _interval(model, "means", prob=0.99)
    assert np.all((lo <= 3.0 * TRUE_2D_MEANS) & (3.0 * TRUE_2D_MEANS <= hi)), (lo, hi)
    cov = model.idata_["posterior"]["covariances"]
    expected = {"tied": (2, 2), "diag": (3, 2), "spherical": (3,)}[ctype]
    assert cov.shape[2:] == expected
    # The posterior mean variances are close to 9. A variance estimated from 80 points has
    # a relative standard error of sqrt(2 / 79) = 0.16 (less when pooled: tied, spherical),
    # so rtol=0.35 is over two standard errors; 3 or 1/9 is off by 67% or more.
    variances = cov.mean(("chain", "draw")).values
    if ctype == "tied":
        variances = np.diagonal(variances)
    np.testing.assert_allclose(variances, 9.0, rtol=0.35)


def test_integer_sample_weights_match_repeated_rows():
    """Same log density, hence the same posterior: compare posterior means to MC error."""
    rng = np.random.default_rng(0)
    X = _three_blobs(seed=7, n=(40, 40, 40))
    counts = rng.integers(1, 4, size=len(X))
    kw = dict(draws=1000, tune=500, chains=2, random_state=0)
    weighted, _ = _fit_quietly(BayesianGaussianMixture(3, **kw), X, sample_weight=counts)
    repeated, _ = _fit_quietly(BayesianGaussianMixture(3, **kw), np.repeat(X, counts, axis=0))
    a = weighted.idata_["posterior"]["means"]
    b = repeated.idata_["posterior"]["means"]
    se = np.sqrt(a.var(("chain", "draw")) / 500 + b.var(("chain", "draw")) / 500)
    diff = np.abs(a.mean(("chain", "draw")) - b.mean(("chain", "draw")))
    assert np.all(diff < 5 * se), (diff.values, se.values)
    np.testing.assert_allclose(weighted.em_.means_, repeated.em_.means_, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_pymc_nuts_on_model_gives_the_same_posterior():
    """PyMC's own NUTS on ``model_`` (started at the EM estimate) finds the same posterior
    as our numpyro path: the sampling route changes nothing but speed."""
    import pymc as pm

    X = _three_blobs(seed=8, n=(60, 60, 60))
    kw = dict(draws=1000, tune=500, chains=2, random_state=0)
    ours, caught = _fit_quietly(BayesianGaussianMixture(3, **kw), X)
    assert caught == []
    with ours.model_, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        idata = pm.sample(
            draws=1000,
            tune=500,
            chains=2,
            cores=1,
            nuts_sampler="pymc",
            random_seed=1,
            progressbar=False,
            compute_convergence_checks=False,
        )
    a = ours.idata_["posterior"]["means"]
    b = idata["posterior"]["means"]
    # Both start at the EM mode; PyMC's draws are not relabelled, so sort by the first mean.
    order = np.argsort(b.mean(("chain", "draw")).values[:, 0])
    b = b.isel(component=order)
    se = np.sqrt(a.var(("chain", "draw")) / 500 + b.var(("chain", "draw")) / 500)
    diff = np.abs(a.mean(("chain", "draw")).values - b.mean(("chain", "draw")).values)
    assert np.all(diff < 5 * se.values), (diff, se.values)


# ---------------------------------------------------------------------------
# The PyMC model handed to the user
# ---------------------------------------------------------------------------


def test_model_is_handed_over_with_the_em_start(blobs):
    import pymc as pm

    model, X, _ = blobs
    pm_model = model.model_
    assert isinstance(pm_model, pm.Model)
    assert [rv.name for rv in pm_model.observed_RVs] == ["X"]
    np.testing.assert_array_equal(pm_model["X_data"].get_value(), X)
    # The EM start, written in the model's variables, maps back to the EM estimate.
    for name, value in model.start_.items():
        pm_model.set_initval(pm_model[name], value)
    start = pm_model.initial_point()
    for name in model.start_:
        pm_model.set_initval(pm_model[name], None)
    point_fn = pm_model.compile_fn(
        pm_model.replace_rvs_by_values([pm_model["weights"], pm_model["means"]]),
        inputs=pm_model.value_vars,
        on_unused_input="ignore",
        mode="FAST_COMPILE",
    )
    weights, means = point_fn(start)
    np.testing.assert_allclose(weights, model.em_.weights_, rtol=1e-10)
    np.testing.assert_allclose(means, model.em_.means_, rtol=1e-10)
    # idata_ uses the model's names and dims.
    post = model.idata_["posterior"]
    for name in ("weights", "means", "covariances", "precisions_cholesky", "precision_chi2"):
        assert post[name].dims[2:] == tuple(pm_model.named_vars_to_dims[name])


def test_pymc_tools_work_on_the_fitted_model(blobs):
    import pymc as pm

    model, X, _ = blobs
    pm_model = model.model_
    graph = pm.model_to_graphviz(pm_model)
    assert "Dirichlet" in graph.source
    # PyMC's pointwise log-likelihood of the fitted posterior equals the stored one.
    import xarray as xr

    thinned = xr.DataTree.from_dict(
        {"posterior": model.idata_["posterior"].to_dataset().isel(draw=slice(0, 20))}
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ll = pm.compute_log_likelihood(
            thinned, model=pm_model, progressbar=False, extend_inferencedata=False
        )
    np.testing.assert_allclose(
        ll["X"].values,
        model.idata_["log_likelihood"]["X"].values[:, :20],
        rtol=1e-9,
    )
    with pm_model, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(draws=20, random_seed=0)
    assert prior["prior_predictive"]["X"].shape == (1, 20, X.shape[0], 2)


def test_extended_model_runs_through_the_pipeline(tmp_path):
    import arviz as az

    X = _three_blobs(seed=9, n=(50, 50, 50))
    model = ExtendedModel(3, draws=300, tune=300, chains=2, random_state=0)
    model, _ = _fit_quietly(model, X)
    post = model.idata_["posterior"]
    assert "extra_scale" in post and post["extra_scale"].dims == ("chain", "draw")
    # The added variable is checked like the mixture's own parameters.
    assert model.diagnostics_.max_rhat >= float(az.rhat(post["extra_scale"]).values)
    lo, hi = _interval(model, "means", prob=0.99)
    assert np.all((lo <= TRUE_2D_MEANS) & (TRUE_2D_MEANS <= hi)), (lo, hi)
    loaded = ExtendedModel.load(model.save(tmp_path / "extended.zarr"))
    assert "extra_scale" in loaded.model_.named_vars
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


class ExtendedModel(BayesianGaussianMixture):
    """A user's extension: a learned scale on the spread of the component means."""

    def build_model(self, X, n_components, covariance_type, prior, sample_weight):
        import pymc as pm

        from bayes_gmm.model import build_model

        model = build_model(X, n_components, covariance_type, prior, sample_weight)
        with model:
            scale = pm.HalfNormal("extra_scale", 10.0)
            pm.Potential("means_spread", pm.logp(pm.Normal.dist(0.0, scale), model["means"]).sum())
        return model


class NoObserved(BayesianGaussianMixture):
    def build_model(self, X, n_components, covariance_type, prior, sample_weight):
        import pymc as pm

        with pm.Model(coords={"component": range(n_components)}) as model:
            pm.Dirichlet("weights", np.ones(n_components), dims="component")
        return model


def test_extended_model_without_what_the_pipeline_needs_is_refused():
    X = _three_blobs(seed=9, n=(20, 20, 20))
    with pytest.raises(ValueError, match="lacks means, covariances, precisions_cholesky"):
        NoObserved(3).fit(X)
    assert not hasattr(NoObserved(3), "idata_")


def test_failed_fit_leaves_the_estimator_unfitted(blobs, monkeypatch):
    import bayes_gmm.bayesian as bayesian

    _, X, _ = blobs
    model = BayesianGaussianMixture(3, draws=20, tune=20, chains=2, random_state=0)
    model, _ = _fit_quietly(model, X)
    assert hasattr(model, "idata_")

    def broken(*args, **kwargs):
        raise RuntimeError("sampler crashed")

    monkeypatch.setattr(bayesian, "sample_nuts", broken)
    with pytest.raises(RuntimeError, match="sampler crashed"):
        model.fit(X)
    for name in ("idata_", "model_", "em_", "diagnostics_", "n_components_"):
        assert not hasattr(model, name), name


def test_missing_jax_is_a_clear_error(monkeypatch):
    import sys

    import bayes_gmm.sampling as sampling

    monkeypatch.setattr(sampling, "_SETUP", [])
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ImportError, match="pip install jax numpyro"):
        sampling._setup_jax()


def test_auto_metric_follows_the_smallest_components_rows():
    """ "auto" is the Laplace metric when every EM component holds enough rows, warm-up's
    diagonal one otherwise (sample weights count as rows)."""
    from bayes_gmm.start import LAPLACE_MIN_COMPONENT_WEIGHT, choose_metric

    weights = np.array([0.7, 0.3])
    enough = LAPLACE_MIN_COMPONENT_WEIGHT / 0.3
    assert choose_metric("auto", weights, enough) == "laplace"
    assert choose_metric("auto", weights, 0.99 * enough) == "adapt"
    assert choose_metric("adapt", weights, 1e9) == "adapt"
    assert choose_metric("laplace", weights, 10) == "laplace"


def test_pointwise_log_likelihood_above_the_limit_is_not_stored(monkeypatch, blobs):
    """Above LOG_LIKELIHOOD_LIMIT the fit stores no log_likelihood group (the sampler is
    not asked for it), and loo() computes the same estimate in chunks."""
    from bayes_gmm import bayesian

    stored, X, _ = blobs
    monkeypatch.setattr(bayesian, "LOG_LIKELIHOOD_LIMIT", 0)
    model = BayesianGaussianMixture(3, draws=1000, tune=500, chains=4, random_state=1)
    model, _ = _fit_quietly(model, X)
    assert "log_likelihood" not in model.idata_.children
    # Same seed, same draws: only where the pointwise values come from differs.
    np.testing.assert_allclose(model.loo().elpd, stored.loo().elpd, rtol=1e-9)
