"""Missing values: EM on the observed coordinates (``missing="em"``)."""

import numpy as np
import pytest
from scipy.stats import multivariate_normal

from bayes_gmm import GaussianMixture, _missing
from bayes_gmm import _gaussian as g

TYPES = ["full", "tied", "diag", "spherical"]
TRUE_MEANS = np.array([[0.0, 0.0, 0.0], [5.0, 4.0, 0.0], [2.0, 6.0, 5.0]])


def _simulate(n, seed=0, ctype="full"):
    """Three components whose covariances follow ``ctype`` (so that model is the true one)."""
    rng = np.random.default_rng(seed)
    factors = rng.normal(size=(3, 3, 3)) * 0.6
    covs = np.array([f @ f.T + np.eye(3) for f in factors])
    if ctype == "tied":
        covs[:] = covs[0]
    elif ctype == "diag":
        covs = covs * np.eye(3)
    elif ctype == "spherical":
        covs = np.array([np.trace(c) / 3 * np.eye(3) for c in covs])
    labels = rng.choice(3, n, p=[0.3, 0.3, 0.4])
    X = np.empty((n, 3))
    for k in range(3):
        rows = labels == k
        X[rows] = rng.multivariate_normal(TRUE_MEANS[k], covs[k], size=rows.sum())
    return X


def _remove(X, fraction, seed):
    rng = np.random.default_rng(seed)
    Xm = np.where(rng.random(X.shape) < fraction, np.nan, X)
    return Xm[~np.isnan(Xm).all(axis=1)]


@pytest.mark.parametrize("ctype", TYPES)
def test_observed_log_likelihood_is_the_marginal_density(ctype):
    X = _simulate(300)
    gm = GaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    Xm = _remove(X, 0.3, seed=1)
    full = g.full_covariances(gm.covariances_, ctype, 3, 3)
    expected = []
    for row in Xm[:40]:
        o = ~np.isnan(row)
        dens = sum(
            w * multivariate_normal(m[o], c[np.ix_(o, o)]).pdf(row[o])
            for w, m, c in zip(gm.weights_, gm.means_, full, strict=True)
        )
        expected.append(np.log(dens))
    got = _missing.observed_log_likelihood(Xm[:40], gm.weights_, gm.means_, gm.covariances_, ctype)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # predict_proba and score_samples on rows with NaN use the same marginal density
    gm.set_params(missing="em")
    np.testing.assert_allclose(gm.score_samples(Xm[:40]), expected, rtol=1e-10, atol=1e-10)
    proba = gm.predict_proba(Xm)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    complete = ~np.isnan(Xm).any(axis=1)
    np.testing.assert_allclose(proba[complete], gm.predict_proba(Xm[complete]), atol=1e-12)


@pytest.mark.parametrize("ctype", TYPES)
def test_expected_statistics_on_complete_rows_are_the_ordinary_ones(ctype):
    X = _simulate(500)
    gm = GaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    center = X.mean(axis=0)
    Xc = X - center
    w = np.linspace(0.5, 2.0, len(X))
    stats = _missing.expected_statistics(
        Xc, w, gm.weights_, gm.means_ - center, gm.covariances_, ctype
    )
    eta, const = g.natural_parameters(gm.means_ - center, gm.precisions_cholesky_, ctype)
    feats = g.features(Xc, ctype)
    lp = g.linear_log_prob(feats, eta, const + np.log(gm.weights_), ctype, gm.precisions_cholesky_)
    log_norm, resp = g.normalize(lp)
    ref = g.summarize(feats, w, resp, ctype, 3)
    g.finish_moments(ref, ctype, g.weighted_second_moment(Xc, w))
    np.testing.assert_allclose(stats.weight, ref.weight, rtol=1e-10)
    np.testing.assert_allclose(stats.sum_x, ref.sum_x, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.sum_xx, ref.sum_xx, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.log_likelihood, w @ log_norm, rtol=1e-12)


@pytest.mark.parametrize("ctype", TYPES)
@pytest.mark.parametrize("fraction", [0.1, 0.3])
def test_missing_at_random_stays_within_sampling_error_and_beats_dropping_rows(ctype, fraction):
    X = _simulate(3000, ctype=ctype)
    kw = dict(covariance_type=ctype, random_state=0, means_init=TRUE_MEANS)
    complete = GaussianMixture(3, **kw).fit(X)
    # standard error of each mean and covariance entry from the complete-data fit
    cov_c = g.full_covariances(complete.covariances_, ctype, 3, 3)
    var = np.diagonal(cov_c, axis1=1, axis2=2)
    n_k = len(X) * complete.weights_
    se_mean = np.sqrt(var / n_k[:, None])
    se_cov = np.sqrt((cov_c**2 + var[:, :, None] * var[:, None, :]) / n_k[:, None, None])
    errors = {"em": [], "drop": []}
    for seed in range(3):  # removal patterns; the comparison is on their average
        Xm = _remove(X, fraction, seed=seed)
        em = GaussianMixture(3, missing="em", **kw).fit(Xm)
        assert np.all(np.diff(em.history_) > -1e-8 * abs(em.history_[-1]))
        dropped = GaussianMixture(3, **kw).fit(Xm[~np.isnan(Xm).any(axis=1)])
        for name, fit in (("em", em), ("drop", dropped)):
            z_mean = (fit.means_ - complete.means_) / se_mean
            cov = g.full_covariances(fit.covariances_, ctype, 3, 3)
            z_cov = (cov - cov_c) / se_cov
            errors[name].append(np.concatenate([z_mean.ravel(), z_cov.ravel()]))
        # within sampling error of the complete-data fit: the information lost to missing
        # values is at most `fraction` of it, so |z| stays far below 3 for every parameter
        assert np.abs(errors["em"][-1]).max() < 3.0
        assert np.abs(em.weights_ - complete.weights_).max() < 3 * np.sqrt(0.25 / len(X))
    rms = {name: np.sqrt(np.mean(np.square(z))) for name, z in errors.items()}
    assert rms["em"] < 0.75 * rms["drop"], rms


def test_criteria_are_the_observed_data_ones():
    Xm = _remove(_simulate(800), 0.2, seed=3)
    gm = GaussianMixture(3, missing="em", random_state=0).fit(Xm)
    loglik = gm.score_samples(Xm).sum()
    np.testing.assert_allclose(gm.log_likelihood_, loglik, rtol=1e-9)
    p = gm.n_parameters()
    np.testing.assert_allclose(gm.bic(Xm), -2 * loglik + p * np.log(len(Xm)), rtol=1e-12)
    top = np.log(gm.predict_proba(Xm).max(axis=1)).sum()
    np.testing.assert_allclose(gm.icl(Xm), gm.bic(Xm) - 2 * top, rtol=1e-12)
    np.testing.assert_array_equal(gm.fit_predict(Xm), gm.predict(Xm))


def test_map_under_a_prior_with_missing_values():
    from bayes_gmm import GaussianMixturePrior

    Xm = _remove(_simulate(600), 0.2, seed=4)
    gm = GaussianMixture(3, missing="em", prior=GaussianMixturePrior(), random_state=0).fit(Xm)
    assert gm.converged_
    assert np.all(np.diff(gm.history_) > -1e-8 * abs(gm.history_[-1]))
    np.testing.assert_allclose(np.sort(gm.means_[:, 0]), np.sort(TRUE_MEANS[:, 0]), atol=0.5)


def test_nan_is_an_error_that_names_the_option():
    X = _simulate(100)
    X[3, 1] = np.nan
    with pytest.raises(ValueError, match='missing="em"'):
        GaussianMixture(2).fit(X)
    gm = GaussianMixture(2, random_state=0).fit(X[np.isfinite(X).all(axis=1)])
    with pytest.raises(ValueError, match='missing="em"'):
        gm.predict(X)


def test_bad_missing_input_is_refused_clearly():
    X = _simulate(100)
    X[[4, 7]] = np.nan
    with pytest.raises(ValueError, match=r"2 row\(s\) with every value missing \(first: 4, 7\)"):
        GaussianMixture(2, missing="em").fit(X)
    X = _simulate(100)
    X[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"column\(s\) \[1\] with every value missing"):
        GaussianMixture(2, missing="em").fit(X)
    X = _simulate(100)
    X[0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        GaussianMixture(2, missing="em").fit(X)
    with pytest.raises(ValueError, match="missing must be one of"):
        GaussianMixture(2, missing="drop").fit(_simulate(50))


def test_missing_em_without_nan_is_the_ordinary_fit():
    X = _simulate(400)
    a = GaussianMixture(3, random_state=0).fit(X)
    b = GaussianMixture(3, random_state=0, missing="em").fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    assert a.log_likelihood_ == b.log_likelihood_


def test_select_model_with_missing_values_uses_observed_data_criteria():
    from bayes_gmm import select_model

    X = _simulate(1500, ctype="diag")
    Xm = _remove(X, 0.15, seed=5)
    # scikit-learn's four structures: enough to compare the two grids, and fast (mclust's 14
    # take ten times as long with missing values).
    kw = dict(n_components=range(1, 5), covariance_types=("full", "tied", "diag", "spherical"))
    sel = select_model(Xm, missing="em", random_state=0, verbose=False, **kw)
    complete = select_model(X, random_state=0, verbose=False, **kw)
    assert sel.best_params == complete.best_params
    assert sel.best_params[1] == 3
    for (ctype, K), est in sel.estimators.items():
        row = sel.table.set_index(["covariance_type", "n_components"]).loc[(ctype, K)]
        assert est.missing == "em"
        np.testing.assert_allclose(row["bic"], est.bic(Xm), rtol=1e-12)
        np.testing.assert_allclose(row["log_likelihood"], est.score_samples(Xm).sum(), rtol=1e-12)
    with pytest.raises(ValueError, match='missing="em"'):
        select_model(Xm, n_components=[2], verbose=False)


@pytest.mark.parametrize("ctype", ["VEV", "EII", "EVI"])
def test_mclust_structures_with_missing_values(ctype):
    X = _simulate(1500, ctype="full")
    Xm = _remove(X, 0.15, seed=7)
    gm = GaussianMixture(3, covariance_type=ctype, missing="em", means_init=TRUE_MEANS).fit(Xm)
    assert np.all(np.diff(gm.history_) > -1e-8 * abs(gm.history_[-1]))
    np.testing.assert_allclose(
        _missing.observed_log_likelihood(Xm, gm.weights_, gm.means_, gm.covariances_, ctype),
        gm.score_samples(Xm),
        rtol=1e-12,
    )
    np.testing.assert_allclose(gm.means_, TRUE_MEANS[np.argsort(TRUE_MEANS[:, 0])], atol=0.3)
