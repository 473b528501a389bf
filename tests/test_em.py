"""The EM engine: equality with scikit-learn, monotone objective, recovery, MAP, bad input."""

import re
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import stats
from sklearn.datasets import load_iris
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import adjusted_rand_score
from sklearn.mixture import GaussianMixture as SkGaussianMixture
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import parametrize_with_checks

from bayes_gmm import GaussianMixture, GaussianMixturePrior
from bayes_gmm._validation import DataWarning
from bayes_gmm.datasets import load_faithful, make_foot_sizes
from bayes_gmm.em import DegenerateFitWarning, n_parameters

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def three_blobs(n=300, d=2, seed=0):
    rng = np.random.default_rng(seed)
    centers = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])[:, :d] if d <= 2 else None
    if centers is None:
        centers = rng.normal(0, 4, size=(3, d))
    labels = rng.integers(3, size=n)
    A = rng.normal(size=(3, d, d)) * 0.3 + np.eye(d)
    X = centers[labels] + np.einsum("nij,nj->ni", A[labels], rng.standard_normal((n, d)))
    return X, labels


def sklearn_initial_parameters(X, K, ctype, seed):
    """The initial parameters scikit-learn would start from, as explicit *_init values."""
    sk = SkGaussianMixture(K, covariance_type=ctype, random_state=seed)
    from sklearn.utils import check_random_state

    sk._initialize_parameters(X, check_random_state(seed))
    pc = sk.precisions_cholesky_
    if ctype in ("full", "tied"):
        prec = pc @ np.swapaxes(pc, -1, -2)
    else:
        prec = pc**2
    return {"weights_init": sk.weights_, "means_init": sk.means_, "precisions_init": prec}


# ----------------------------------------------------------------------------- peers
@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize(
    ("max_iter", "tol"),
    [(25, 0.0), (500, 1e-3), (500, 1e-6), (3, 1e-3)],
    ids=["max_iter-reached", "converged-tol1e-3", "converged-tol1e-6", "stopped-early"],
)
def test_same_start_same_answer_as_sklearn(ctype, max_iter, tol):
    # Converged or not: the same parameters, n_iter_, converged_ and lower_bounds_.
    X, _ = three_blobs(n=400, d=3, seed=1)
    init = sklearn_initial_parameters(X, 3, ctype, seed=2)
    ours = GaussianMixture(3, covariance_type=ctype, max_iter=max_iter, tol=tol, **init)
    theirs = SkGaussianMixture(3, covariance_type=ctype, max_iter=max_iter, tol=tol, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X)
        theirs.fit(X)
    assert ours.n_iter_ == theirs.n_iter_
    assert ours.converged_ == theirs.converged_ == (max_iter == 500)
    np.testing.assert_allclose(ours.lower_bounds_, theirs.lower_bounds_, rtol=1e-8, atol=0)
    order = np.argsort(theirs.means_[:, 0])
    rel = dict(rtol=1e-8, atol=0)
    np.testing.assert_allclose(ours.weights_, theirs.weights_[order], **rel)
    np.testing.assert_allclose(ours.means_, theirs.means_[order], **rel)
    cov = theirs.covariances_ if ctype == "tied" else theirs.covariances_[order]
    np.testing.assert_allclose(ours.covariances_, cov, **rel)
    # log_likelihood_ is at the returned parameters: sklearn's score at its parameters.
    np.testing.assert_allclose(ours.log_likelihood_, theirs.score_samples(X).sum(), **rel)
    np.testing.assert_allclose(ours.bic(X), theirs.bic(X), **rel)
    np.testing.assert_allclose(ours.aic(X), theirs.aic(X), **rel)
    assert ours.n_parameters() == theirs._n_parameters()


def test_default_settings_match_sklearn_on_iris():
    X, species = load_iris(return_X_y=True)
    ours = GaussianMixture(3, random_state=0).fit(X)
    theirs = SkGaussianMixture(3, random_state=0).fit(X)
    ari_ours = adjusted_rand_score(species, ours.predict(X))
    ari_theirs = adjusted_rand_score(species, theirs.predict(X))
    assert ari_ours >= ari_theirs - 1e-12
    assert ari_ours > 0.85


def test_faithful_tied_three_matches_mclust_bic():
    # mclust: Mclust(faithful) picks EEE,3 with BIC -2314.316 (its sign, relative tol 1e-5).
    X = load_faithful()
    gm = GaussianMixture(3, covariance_type="tied", tol=1e-8, max_iter=2000, n_init=5)
    gm.set_params(random_state=0).fit(X)
    assert gm.bic(X) == pytest.approx(2314.3, abs=0.05)


def test_default_tol_reaches_the_optimum_sklearn_tol_stops_short():
    # The numbers the README and the tol docstring quote for the default tol.
    X = load_faithful()
    bic = {
        tol: GaussianMixture(3, covariance_type="tied", random_state=0, tol=tol).fit(X).bic(X)
        for tol in (1e-3, 1e-5)
    }
    assert bic[1e-3] == pytest.approx(2342.8, abs=0.05)
    assert bic[1e-5] == pytest.approx(2314.3, abs=0.05)
    # scikit-learn stops at the same place with its tol (and a max_iter that is not reached).
    theirs = SkGaussianMixture(3, covariance_type="tied", random_state=0, max_iter=500).fit(X)
    assert theirs.bic(X) == pytest.approx(bic[1e-3], rel=1e-10)
    assert GaussianMixture().tol == 1e-5


# ----------------------------------------------------------------------------- objective
@st.composite
def mixture_data(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    d = draw(st.integers(1, 3))
    K = draw(st.integers(1, 4))
    n = draw(st.integers(12 * K * (d + 1), 200))
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 3, size=(K, d))[rng.integers(K, size=n)] + rng.standard_normal((n, d))
    return X, K, seed


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=mixture_data(), ctype=st.sampled_from(COVARIANCE_TYPES), use_prior=st.booleans())
def test_objective_never_decreases(data, ctype, use_prior):
    X, K, seed = data
    gm = GaussianMixture(
        K,
        covariance_type=ctype,
        init_params="random",
        max_iter=60,
        tol=0.0,
        # Exact EM for the likelihood: reg_covar would make the M-step a slightly
        # different map and break monotonicity by design.
        reg_covar=0.0,
        random_state=seed,
        prior=GaussianMixturePrior() if use_prior else None,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("error", DegenerateFitWarning)
        try:
            gm.fit(X)
        except DegenerateFitWarning:
            assume(False)  # a collapsing MLE component is no longer plain EM
    history = gm.history_
    scale = np.maximum(1.0, np.abs(history[:-1]))
    assert np.all(np.diff(history) >= -1e-10 * scale)
    assert history[-1] == gm.log_likelihood_


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_log_likelihood_is_at_the_returned_parameters(ctype):
    X, _ = three_blobs(seed=3)
    gm = GaussianMixture(3, covariance_type=ctype, random_state=0).fit(X)
    assert gm.log_likelihood_ == pytest.approx(gm.score_samples(X).sum(), rel=1e-12)
    assert gm.lower_bound_ == pytest.approx(gm.score(X), rel=1e-12)
    assert len(gm.history_) == gm.n_iter_ + 1


# ----------------------------------------------------------------------------- recovery
def test_recovers_foot_sizes_within_three_standard_errors():
    X, _ = make_foot_sizes(700, 300, random_state=12)
    gm = GaussianMixture(2, random_state=0, tol=1e-8, max_iter=500).fit(X)
    means, sds = gm.means_[:, 0], np.sqrt(gm.covariances_[:, 0, 0])
    truth_mean, truth_sd, truth_n = np.array([240, 270]), np.array([7, 6]), np.array([700, 300])
    # Complete-data standard errors: the components are 4.6 sd apart, so the extra
    # uncertainty from not knowing the labels is small.
    assert np.all(np.abs(means - truth_mean) < 3 * truth_sd / np.sqrt(truth_n))
    assert np.all(np.abs(sds - truth_sd) < 3 * truth_sd / np.sqrt(2 * truth_n))
    weight_se = np.sqrt(0.7 * 0.3 / 1000)
    assert np.all(np.abs(gm.weights_ - [0.7, 0.3]) < 3 * weight_se)


def test_components_come_back_sorted_by_first_coordinate():
    X, _ = three_blobs(seed=4)
    for seed in range(3):
        gm = GaussianMixture(3, init_params="random_from_data", random_state=seed).fit(X)
        assert np.all(np.diff(gm.means_[:, 0]) > 0)


def test_fixed_random_state_is_reproducible():
    X, _ = three_blobs(seed=5)
    a = GaussianMixture(3, n_init=3, random_state=7).fit(X)
    b = GaussianMixture(3, n_init=3, random_state=7).fit(X)
    np.testing.assert_array_equal(a.means_, b.means_)
    np.testing.assert_array_equal(a.init_log_likelihoods_, b.init_log_likelihoods_)
    assert a.log_likelihood_ == max(a.init_log_likelihoods_)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_integer_weights_equal_repeated_rows(ctype):
    X, _ = three_blobs(n=120, seed=6)
    counts = np.random.default_rng(0).integers(0, 4, size=len(X))
    init = sklearn_initial_parameters(X, 3, ctype, seed=0)
    kw = dict(covariance_type=ctype, max_iter=30, tol=0.0, **init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        weighted = GaussianMixture(3, **kw).fit(X, sample_weight=counts)
        repeated = GaussianMixture(3, **kw).fit(np.repeat(X, counts, axis=0))
    np.testing.assert_allclose(weighted.means_, repeated.means_, rtol=1e-10)
    np.testing.assert_allclose(weighted.covariances_, repeated.covariances_, rtol=1e-10)
    np.testing.assert_allclose(weighted.log_likelihood_, repeated.log_likelihood_, rtol=1e-10)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_sklearn_conventions_give_its_order_bound_and_draws(ctype):
    # conventions="sklearn": components in EM's order, scikit-learn's lower_bound_, and
    # the very draws scikit-learn's sample() returns from the same random_state.
    X, _ = three_blobs(n=400, d=3, seed=1)
    init = sklearn_initial_parameters(X, 3, ctype, seed=2)
    init["means_init"] = init["means_init"][::-1]  # not in sorted order
    if ctype != "tied":
        init["weights_init"] = init["weights_init"][::-1]
        init["precisions_init"] = init["precisions_init"][::-1]
    kw = dict(covariance_type=ctype, tol=1e-3, random_state=5, **init)
    ours = GaussianMixture(3, conventions="sklearn", **kw).fit(X)
    theirs = SkGaussianMixture(3, **kw).fit(X)
    rel = dict(rtol=1e-8, atol=0)
    np.testing.assert_allclose(ours.means_, theirs.means_, **rel)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, **rel)
    np.testing.assert_allclose(ours.lower_bound_, theirs.lower_bound_, **rel)
    Xs, ys = ours.sample(500)
    Xt, yt = theirs.sample(500)
    np.testing.assert_array_equal(ys, yt)
    np.testing.assert_allclose(Xs, Xt, rtol=1e-6, atol=1e-9)
    default = GaussianMixture(3, **kw).fit(X)  # sorted, and lower_bound_ at the result
    assert np.all(np.diff(default.means_[:, 0]) > 0)
    assert not np.all(np.diff(ours.means_[:, 0]) > 0)
    assert default.lower_bound_ == pytest.approx(default.score(X), rel=1e-12)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random", "random_from_data"])
def test_sklearn_conventions_same_random_state_same_fit(ctype, init_params):
    # Same random_state, same initialization and fit as scikit-learn, for every init method.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(200, 2), rng.randn(200, 2) + 3, rng.randn(100, 2) * 0.5 + [6, 0]])
    kw = dict(covariance_type=ctype, init_params=init_params, random_state=1, tol=1e-3)
    ours = GaussianMixture(3, conventions="sklearn", **kw).fit(X)
    theirs = SkGaussianMixture(3, max_iter=500, **kw).fit(X)
    assert ours.n_iter_ == theirs.n_iter_
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-10)
    assert ours.lower_bound_ == pytest.approx(theirs.lower_bound_, rel=1e-12)


def test_two_blobs_converged_fit_equals_sklearn():
    # The example: a converged fit used to stop one M-step before scikit-learn.
    rng = np.random.RandomState(0)
    X = np.vstack([rng.randn(200, 2), rng.randn(200, 2) + 1.5])
    init = dict(
        weights_init=[0.5, 0.5],
        means_init=[[-1.0, 0.0], [3.0, 0.0]],
        precisions_init=np.repeat(np.eye(2)[None], 2, axis=0),
        tol=1e-3,
    )
    ours = GaussianMixture(2, **init).fit(X)
    theirs = SkGaussianMixture(2, **init).fit(X)
    assert ours.converged_ and theirs.converged_
    assert ours.n_iter_ == theirs.n_iter_ == 7
    np.testing.assert_allclose(ours.means_, theirs.means_, rtol=1e-8)
    np.testing.assert_allclose(ours.covariances_, theirs.covariances_, rtol=1e-8)
    # log_likelihood_ is at the returned parameters; lower_bound_ too (sklearn's is the
    # bound before its last M-step, which lower_bounds_[-1] holds here as there).
    assert ours.log_likelihood_ == pytest.approx(theirs.score_samples(X).sum(), rel=1e-12)
    assert ours.lower_bound_ == pytest.approx(theirs.score(X), rel=1e-12)
    assert ours.lower_bounds_[-1] == pytest.approx(theirs.lower_bound_, rel=1e-12)
    assert ours.lower_bound_ > theirs.lower_bound_


def test_warm_start_refits_follow_sklearn_step_by_step():
    # Refits with max_iter=1 take the same steps and converge at the same refit.
    X, _ = three_blobs(n=300, seed=3)
    init = sklearn_initial_parameters(X, 3, "full", seed=1)
    ours = GaussianMixture(3, warm_start=True, max_iter=1, tol=1e-3, **init)
    theirs = SkGaussianMixture(3, warm_start=True, max_iter=1, tol=1e-3, **init)
    steps = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for _ in range(40):
            ours.fit(X)
            theirs.fit(X)
            order = np.argsort(theirs.means_[:, 0])
            np.testing.assert_allclose(ours.means_, theirs.means_[order], rtol=1e-8)
            assert ours.converged_ == theirs.converged_
            steps.append(ours.converged_)
    assert not steps[0] and steps[-1]  # the refits did converge, at the same refit


def test_warm_start_continues_from_the_last_solution():
    X, _ = three_blobs(seed=8)
    gm = GaussianMixture(3, warm_start=True, tol=1e-6, max_iter=500, random_state=0).fit(X)
    first = gm.log_likelihood_
    gm.fit(X)
    assert gm.n_iter_ <= 2
    assert gm.log_likelihood_ >= first - 1e-9


# ----------------------------------------------------------------------------- criteria
@pytest.mark.parametrize(
    ("K", "d", "ctype", "expected"),
    [
        (3, 2, "full", 2 + 6 + 9),
        (3, 2, "tied", 2 + 6 + 3),
        (3, 2, "diag", 2 + 6 + 6),
        (3, 2, "spherical", 2 + 6 + 3),
        (1, 5, "full", 0 + 5 + 15),
        (4, 1, "spherical", 3 + 4 + 4),
    ],
)
def test_parameter_counts(K, d, ctype, expected):
    assert n_parameters(K, d, ctype) == expected


def test_icl_is_bic_plus_classification_entropy():
    X, _ = three_blobs(seed=9)
    gm = GaussianMixture(3, random_state=0).fit(X)
    resp = gm.predict_proba(X)
    expected = gm.bic(X) - 2 * np.log(resp.max(axis=1)).sum()
    assert gm.icl(X) == pytest.approx(expected, rel=1e-12)
    assert gm.icl(X) >= gm.bic(X)


# ----------------------------------------------------------------------------- MAP
def test_prior_log_density_matches_scipy():
    X, _ = three_blobs(seed=10)
    prior = GaussianMixturePrior(weight_concentration=2.0, mean_precision=0.5)
    rng = np.random.default_rng(0)
    weights = np.array([0.2, 0.3, 0.5])
    means = rng.normal(size=(3, 2))
    for ctype, covs in [
        ("full", np.array([[[2.0, 0.3], [0.3, 1.0]], [[1.0, 0], [0, 1]], [[3.0, -1], [-1, 2]]])),
        ("tied", np.array([[2.0, 0.3], [0.3, 1.0]])),
        ("diag", np.array([[2.0, 1.0], [0.5, 1.5], [1.0, 3.0]])),
        ("spherical", np.array([2.0, 0.5, 1.5])),
    ]:
        r = prior.resolve(X, 3, ctype)
        expected = stats.dirichlet(np.full(3, 2.0)).logpdf(weights)
        for k in range(3):
            if ctype in ("full", "tied"):
                S = covs if ctype == "tied" else covs[k]
                expected += stats.multivariate_normal(r.mean, S / 0.5).logpdf(means[k])
                if ctype == "full" or k == 0:
                    expected += stats.invwishart(r.degrees_of_freedom, r.scale).logpdf(S)
            else:
                var = covs[k] if ctype == "diag" else np.full(2, covs[k])
                expected += stats.norm(r.mean, np.sqrt(var / 0.5)).logpdf(means[k]).sum()
                ig = stats.invgamma(r.degrees_of_freedom / 2, scale=r.scale / 2)
                expected += ig.logpdf(covs[k]).sum()
        assert r.log_density(weights, means, covs) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_map_estimate_is_a_stationary_point_of_the_log_posterior(ctype):
    """Moving any parameter a little away from the MAP estimate lowers the log-posterior."""
    X, _ = three_blobs(n=150, seed=11)
    gm = GaussianMixture(3, covariance_type=ctype, tol=1e-12, max_iter=5000, random_state=0)
    gm.set_params(prior=GaussianMixturePrior(weight_concentration=3.0)).fit(X)

    def log_post(weights, means, covs):
        probe = GaussianMixture(3, covariance_type=ctype).set_params()
        probe.weights_, probe.means_, probe.covariances_ = weights, means, covs
        probe.precisions_cholesky_ = _prec_chol(covs, ctype)
        probe.n_features_in_ = 2
        return probe.score_samples(X).sum() + gm.prior_.log_density(weights, means, covs)

    best = log_post(gm.weights_, gm.means_, gm.covariances_)
    assert best == pytest.approx(gm.log_likelihood_, rel=1e-10)
    h = 1e-4
    for step in (h, -h):
        means = gm.means_.copy()
        means[1, 0] += step
        assert log_post(gm.weights_, means, gm.covariances_) < best
        covs = gm.covariances_.copy()
        covs.flat[0] *= 1 + step
        assert log_post(gm.weights_, gm.means_, covs) < best
        weights = gm.weights_ * np.exp(step * np.array([1.0, -1.0, 0.0]))
        assert log_post(weights / weights.sum(), gm.means_, gm.covariances_) < best


def _prec_chol(covs, ctype):
    if ctype in ("full", "tied"):
        return np.swapaxes(np.linalg.inv(np.linalg.cholesky(covs)), -1, -2)
    return 1 / np.sqrt(covs)


def test_default_prior_follows_mclust_prior_control():
    X = load_faithful().to_numpy()
    r = GaussianMixturePrior().resolve(X, 3, "full")
    assert r.mean_precision == 0.01
    assert r.degrees_of_freedom == 4
    np.testing.assert_allclose(r.mean, X.mean(axis=0))
    np.testing.assert_allclose(r.scale, np.cov(X.T) / 3 ** (2 / 2))
    # The estimator passes unit weights; the scale must not change with them.
    fitted = GaussianMixture(3, prior=GaussianMixturePrior(), random_state=0).fit(X).prior_
    np.testing.assert_allclose(fitted.scale, r.scale, rtol=1e-12)
    counts = np.arange(len(X)) % 3 + 1
    weighted = GaussianMixturePrior().resolve(X, 3, "full", sample_weight=counts)
    repeated = GaussianMixturePrior().resolve(np.repeat(X, counts, axis=0), 3, "full")
    np.testing.assert_allclose(weighted.scale, repeated.scale, rtol=1e-12)
    assert (
        GaussianMixturePrior.from_dict(GaussianMixturePrior().to_dict()) == GaussianMixturePrior()
    )


def test_prior_keeps_a_duplicated_cluster_regular():
    X, _ = three_blobs(n=200, seed=12)
    X = np.vstack([X, np.repeat([[10.0, 10.0]], 15, axis=0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        gm = GaussianMixture(4, prior=GaussianMixturePrior(), random_state=0).fit(X)
    assert np.all(np.linalg.eigvalsh(gm.covariances_) > 1e-3)


# ----------------------------------------------------------------------------- sampling
def test_sample_is_shuffled_and_has_the_model_moments():
    X, _ = three_blobs(seed=13)
    gm = GaussianMixture(3, random_state=0).fit(X)
    Xs, labels = gm.sample(20_000, random_state=1)
    assert Xs.shape == (20_000, 2)
    assert np.any(np.diff(labels) < 0)  # not grouped by component
    for k in range(3):
        rows = Xs[labels == k]
        se = np.sqrt(np.diag(gm.covariances_[k]) / len(rows))
        assert np.all(np.abs(rows.mean(axis=0) - gm.means_[k]) < 4 * se)
    np.testing.assert_allclose(np.bincount(labels) / 20_000, gm.weights_, atol=0.015)
    np.testing.assert_array_equal(gm.sample(5, random_state=3)[0], gm.sample(5, random_state=3)[0])


@pytest.mark.parametrize("verbose", [1, 2])
def test_verbose_prints_sklearns_lines(verbose, capsys):
    # The same lines as scikit-learn's verbose output, times and values aside.
    X, _ = three_blobs(seed=4)
    kw = dict(tol=1e-3, random_state=0, verbose=verbose, verbose_interval=2)
    GaussianMixture(3, **kw).fit(X)
    ours = capsys.readouterr().out.splitlines()
    SkGaussianMixture(3, **kw).fit(X)
    theirs = capsys.readouterr().out.splitlines()

    def shape(line):  # the line without its numbers
        return re.sub(r"-?\d+\.\d+", "#", line).split(" Objective at")[0]

    assert [shape(line) for line in ours] == [shape(line) for line in theirs]
    assert len(ours) >= 3
    if verbose == 2:  # the same lower bound as scikit-learn
        assert ours[-1].split("lower bound ")[1][:8] == theirs[-1].split("lower bound ")[1][:8]


def test_sample_draws_from_the_estimators_random_state():
    # As scikit-learn: an int random_state makes every sample() call the same; a
    # RandomState instance (or None) moves on between calls.
    X, _ = three_blobs(seed=13)
    gm = GaussianMixture(3, random_state=0).fit(X)
    np.testing.assert_array_equal(gm.sample(50)[0], gm.sample(50)[0])
    np.testing.assert_array_equal(gm.sample(50)[0], gm.sample(50, random_state=0)[0])
    gm.set_params(random_state=np.random.RandomState(0))
    assert not np.array_equal(gm.sample(50)[0], gm.sample(50)[0])
    with pytest.raises(ValueError, match=r"Invalid value for 'n_samples': 0 .*n_samples >= 1"):
        gm.sample(0)


# ----------------------------------------------------------------------------- input
def test_dataframe_integer_and_float32_input():
    df = load_faithful()
    gm = GaussianMixture(2, random_state=0).fit(df)
    assert list(gm.feature_names_in_) == ["eruptions", "waiting"]
    assert gm.predict(df).shape == (272,)
    X32 = df.to_numpy().astype(np.float32)
    gm32 = GaussianMixture(2, random_state=0).fit(X32)
    np.testing.assert_allclose(gm32.means_, gm.means_, rtol=1e-5)
    # float32 in, float32 out (as scikit-learn); EM itself runs in float64.
    for name in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_"):
        assert getattr(gm32, name).dtype == np.float32, name
    assert gm32.score_samples(X32).dtype == gm32.predict_proba(X32).dtype == np.float32
    np.testing.assert_allclose(gm32.score_samples(X32), gm.score_samples(df), rtol=1e-5)
    assert gm.score_samples(X32).dtype == np.float64  # the model's dtype decides
    Xint = np.round(df.to_numpy() * 10).astype(int)
    assert GaussianMixture(2, random_state=0).fit(Xint).converged_


@pytest.mark.parametrize(
    ("X", "match"),
    [
        ([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]], "NaN in 1 row"),
        ([[1.0, np.inf], [2.0, 3.0], [4.0, 5.0]], "infinite"),
        (np.empty((0, 2)), "empty"),
        ([[1.0, 2.0]], "1 sample"),
        ([["a", "b"], ["c", "d"]], "only numbers"),
        (
            pd.DataFrame({"x": [1.0, 2.0, 3.0], "s": ["a", "b", "c"]}),
            r"non-numeric column\(s\) \['s'\]",
        ),
        (np.arange(10.0), "Reshape your data"),
    ],
)
def test_bad_input_says_what_is_wrong(X, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(1).fit(X)


def test_too_many_components_and_wrong_features_at_predict():
    X, _ = three_blobs(n=5)
    with pytest.raises(ValueError, match="n_components=6 and n_samples=5"):
        GaussianMixture(6).fit(X)
    gm = GaussianMixture(2, random_state=0).fit(three_blobs()[0])
    with pytest.raises(ValueError, match="X has 3 features, but GaussianMixture is expecting 2"):
        gm.predict(np.ones((4, 3)))


@pytest.mark.parametrize(
    ("weights", "match"),
    [
        (-np.ones(300), "negative"),
        (np.zeros(300), "zero for every sample"),
        (np.ones(7), "one weight per sample"),
    ],
)
def test_bad_sample_weights(weights, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(2).fit(three_blobs()[0], sample_weight=weights)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"n_components": 0}, r"'n_components' parameter .* range \[1, inf\).*select_model"),
        ({"covariance_type": "vvv"}, r"'covariance_type' parameter .*'full' is VVV"),
        ({"tol": -1.0}, r"'tol' parameter .* Got -1.0 instead. It is the stopping threshold"),
        ({"tol": np.inf}, "'tol' parameter .* Got inf instead"),
        ({"reg_covar": np.nan}, "'reg_covar' parameter .* 0 for none"),
        ({"max_iter": 2.5}, "'max_iter' parameter .* must be an int"),
        ({"n_init": 0}, r"'n_init' parameter .* range \[1, inf\)"),
        ({"init_params": "kmedoids"}, "'init_params' parameter .* must be a str among"),
        ({"missing": "drop"}, "missing must be one of .* NaN read as missing"),
        (
            {"learning_decay": 0.5},
            r"range \(0.5, 1.0\]. Got 0.5 instead. learning_decay must lie in",
        ),
        ({"weights_init": [0.5, 0.6]}, r"sum\(weights\) = 1.10000: weights_init must sum to 1"),
        ({"weights_init": [[0.5], [0.5]]}, r"shape of \(2,\), but got \(2, 1\): weights_init"),
        ({"weights_init": [1.5, -0.5]}, "range .*from -0.5 to 1.5 here"),
        ({"means_init": np.zeros((3, 2))}, r"shape of \(2, 2\), but got \(3, 2\): means_init"),
        ({"precisions_init": -np.ones((2, 2, 2))}, "positive-definite: each matrix"),
        (
            {"covariance_type": "diag", "precisions_init": np.ones(2)},
            r"'diag precision' should have the shape of \(2, 2\), but got \(2,\)",
        ),
        ({"covariance_type": "spherical", "precisions_init": -np.ones(2)}, "inverse variances"),
        ({"prior": {"kappa": 1}}, "GaussianMixturePrior"),
        ({"prior": GaussianMixturePrior(weight_concentration=0.5)}, "weight_concentration >= 1"),
    ],
)
def test_invalid_parameters(params, match):
    # scikit-learn's InvalidParameterError (a ValueError and TypeError) and its message,
    # plus what the parameter is for.
    error = InvalidParameterError if "parameter" in match else (ValueError, TypeError)
    with pytest.raises(error, match=match):
        GaussianMixture(**{"n_components": 2, **params}).fit(three_blobs()[0])


# ----------------------------------------------------------------------------- degenerate
def test_duplicated_points_warn_and_stay_usable():
    X, _ = three_blobs(n=200, seed=14)
    X = np.vstack([X, np.repeat([[10.0, 10.0]], 20, axis=0)])
    with pytest.warns(DegenerateFitWarning, match="collapsed"):
        gm = GaussianMixture(4, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.score_samples(X)))
    np.testing.assert_allclose(gm.predict_proba(X).sum(axis=1), 1.0)


def test_constant_column_warns_and_stays_usable():
    X, _ = three_blobs(n=200, seed=15)
    X = np.column_stack([X, np.full(len(X), 3.0)])
    with pytest.warns(DataWarning, match=r"Column\(s\) \[2\] of X are constant"):
        gm = GaussianMixture(2, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.predict_proba(X)))


def test_component_with_no_data_is_frozen_with_a_warning():
    X, _ = three_blobs(n=200, seed=16)
    means = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0], [1e4, 1e4]])
    with pytest.warns(DegenerateFitWarning, match="lost .*weight"):
        gm = GaussianMixture(4, means_init=means, random_state=0).fit(X)
    assert gm.weights_[-1] < 1e-12
    assert np.all(np.isfinite(gm.means_)) and np.all(np.isfinite(gm.score_samples(X)))


def test_singular_covariance_without_regularization_is_repaired():
    X, _ = three_blobs(n=100, seed=17)
    X = np.vstack([X, np.repeat([[9.0, 9.0]], 10, axis=0)])
    with pytest.warns(DegenerateFitWarning, match="jitter"):
        gm = GaussianMixture(4, reg_covar=0.0, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.score_samples(X)))


# ----------------------------------------------------------------------------- sklearn API
@parametrize_with_checks([GaussianMixture()])
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_prior_handles_collinear_and_constant_data(ctype):
    # Two distinct points and a line: the sample covariance, and so mclust's default
    # prior scale, is singular; the prior must still keep every covariance regular.
    for X in (
        np.repeat([[0.0, 0.0], [1.0, 1.0]], 20, axis=0),
        np.c_[np.arange(30.0), np.arange(30.0)],
    ):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DataWarning)
            gm = GaussianMixture(3, covariance_type=ctype, prior=GaussianMixturePrior())
            gm.set_params(random_state=0).fit(X)
        assert np.all(np.isfinite(gm.score_samples(X)))


def test_fit_split_over_workers_keeps_one_blas_thread_throughout(monkeypatch):
    """Where the E-step splits the rows over worker threads, the M-steps between E-steps
    run on one BLAS thread too (multi-threaded BLAS there left its threads spinning on
    the workers' cores); a fit on one worker leaves BLAS's threads to BLAS."""
    from threadpoolctl import threadpool_info

    from bayes_gmm import _gaussian

    X, _ = three_blobs(n=6000, seed=18)
    monkeypatch.setattr(_gaussian, "CHUNK_ELEMENTS", 512)  # 256-row chunks: 24 of them
    monkeypatch.setattr(_gaussian, "SMALL_PROBLEM_WORK", 0)  # not "small": no limit of its own
    seen = []
    m_step = _gaussian.from_summaries

    def spy(*args, **kwargs):
        seen.append(max(info["num_threads"] for info in threadpool_info()))
        return m_step(*args, **kwargs)

    monkeypatch.setattr(_gaussian, "from_summaries", spy)
    threads = {}
    for workers in (1, 2):
        monkeypatch.setattr(_gaussian, "N_WORKERS", workers)
        seen.clear()
        GaussianMixture(3, random_state=0, max_iter=5, tol=0).fit(X)
        threads[workers] = set(seen)
    assert threads[2] == {1}
    assert threads[1] == {max(info["num_threads"] for info in threadpool_info())}


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
def test_threaded_e_step_equals_sequential(ctype, monkeypatch):
    from bayes_gmm import _gaussian

    X, _ = three_blobs(n=6000, seed=18)
    weights = np.random.default_rng(1).random(len(X))
    monkeypatch.setattr(_gaussian, "CHUNK_ELEMENTS", 512)  # 256-row chunks: 24 of them
    fits = []
    for workers in (1, 3):
        monkeypatch.setattr(_gaussian, "N_WORKERS", workers)
        assert _gaussian.n_workers(len(X), 256) == workers
        gm = GaussianMixture(3, covariance_type=ctype, random_state=0, max_iter=20, tol=0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            fits.append(gm.fit(X, sample_weight=weights))
    np.testing.assert_allclose(fits[0].means_, fits[1].means_, rtol=1e-12)
    np.testing.assert_allclose(fits[0].log_likelihood_, fits[1].log_likelihood_, rtol=1e-12)
