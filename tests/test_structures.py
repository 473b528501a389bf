"""Tests of bayes_gmm.structures: mclust's 14 covariance models, one object each."""

import pathlib
import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sklearn.exceptions import ConvergenceWarning

from bayes_gmm import GaussianMixture, GaussianMixturePrior
from bayes_gmm._batched_em import batched_em
from bayes_gmm.em import DegenerateFitWarning
from bayes_gmm.structures import (
    MCLUST_MODELS,
    POSTERIOR_STRUCTURES,
    SKLEARN_NAMES,
    get_structure,
)

DATA = pathlib.Path(__file__).parent / "data" / "mclust"
NEW_MODELS = [m for m in MCLUST_MODELS if m not in SKLEARN_NAMES.values()]


def _iris():
    return pd.read_csv(DATA / "iris.csv").to_numpy()


# --------------------------------------------------------------------------- names, counts
def test_names_and_aliases():
    assert len(MCLUST_MODELS) == 14 and len(set(MCLUST_MODELS)) == 14
    for alias, code in SKLEARN_NAMES.items():
        assert get_structure(alias) is get_structure(code)
        assert get_structure(code).alias == alias and get_structure(code).layout == alias
    for code in NEW_MODELS:
        s = get_structure(code)
        assert s.alias is None and s.layout == "full" and s.name == code
    with pytest.raises(ValueError, match="upper case: 'VEV'"):
        get_structure("vev")
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        get_structure("banana")


@pytest.mark.parametrize("d", [2, 4])
def test_parameter_counts_equal_mclust_nparams(d):
    # mclust's nMclustParams for every model and G = 1..16 (tests/data/mclust/make_tables.R).
    table = pd.read_csv(DATA / f"nparams_d{d}.csv")
    for model in MCLUST_MODELS:
        ours = [get_structure(model).n_parameters(K, d) for K in table["G"]]
        np.testing.assert_array_equal(ours, table[model], err_msg=model)


def test_posterior_support_and_the_closest_supported_structure():
    assert POSTERIOR_STRUCTURES == ("EII", "VII", "EEI", "VVI", "EEE", "VVV")
    closest = {m: get_structure(m).closest_posterior_structure().name for m in MCLUST_MODELS}
    for m in POSTERIOR_STRUCTURES:
        assert closest[m] == m
    assert closest["VEI"] == closest["EVI"] == "VVI"
    for m in ("VEE", "EVE", "VVE", "EEV", "VEV", "EVV"):
        assert closest[m] == "VVV"
    # The closest structure always contains the model.
    for m in MCLUST_MODELS:
        assert get_structure(closest[m]).nests(get_structure(m))


def test_map_only_where_mclust_defines_a_prior():
    X = _iris()
    # mclust's Fortran has a MAP M-step (me*p) for exactly these.
    assert [m for m in MCLUST_MODELS if get_structure(m).has_map] == [
        "EII", "VII", "EEI", "VEI", "EVI", "VVI", "EEE", "EEV", "VEV", "VVV"
    ]  # fmt: skip
    for model in ("VEE", "EVE", "VVE", "EVV"):
        with pytest.raises(ValueError, match=r"No conjugate prior.*'EEV', 'VEV'"):
            GaussianMixture(2, covariance_type=model, prior=GaussianMixturePrior()).fit(X)


def _mclust_map_steps(name="map_mstep.csv"):
    """mclust's MAP step on faithful from the responsibilities map_z.csv (make_map_tables.R):
    ``mstep(X, model, z, prior = priorControl())`` (map_mstep.csv) or one M-step of its EM,
    ``me(..., control = emControl(itmax = 1))`` (map_me_step.csv)."""
    table = pd.read_csv(DATA / name).set_index("model")
    z = pd.read_csv(DATA / "map_z.csv").to_numpy()
    K = z.shape[1]
    out = {}
    for model, row in table.iterrows():
        sigma = np.array(row["sigma"].split(), float) if row["has_map"] else None
        out[model] = dict(
            has_map=bool(row["has_map"]),
            weights=np.array(row["pro"].split(), float),
            means=np.array(row["mean"].split(), float).reshape(K, -1),  # R's p x G by column
            # p x p x G by column: each (symmetric) matrix is contiguous.
            covariances=None if sigma is None else sigma.reshape(K, 2, 2),
        )
    return z, out


def _map_mstep(X, z, model, prior):
    """One MAP M-step of ours from the responsibilities ``z`` (n, K), in the data's frame."""
    from bayes_gmm import _gaussian as g

    n, d = X.shape
    K = z.shape[1]
    w = np.ones(n)
    center = X.mean(axis=0)
    Xc = X - center
    resolved = prior.resolve(X, K, model)
    stats = g.summarize(g.features(Xc, model), w, z.T.copy(), model, d)
    g.finish_moments(stats, model, g.weighted_second_moment(Xc, w))
    weights, means, covs = g.from_summaries(
        stats, model, 0.0, g.CenteredPrior.from_resolved(resolved, center)
    )
    return weights, means + center, g.full_covariances(covs, model, K, d)


#: mclust's default prior, priorControl(): the diagonal models' scale is the mean variance /
#: K^(2/d) on every coordinate, where ours keeps each column's by default.
MCLUST_PRIOR = GaussianMixturePrior(diagonal_scale="mean")


def test_diagonal_scale_mean_is_mclusts_and_per_column_ours():
    X = pd.read_csv(DATA / "faithful.csv").to_numpy()
    K = 3
    mean_variance = np.var(X, axis=0, ddof=1).mean() / K  # K^(2/d) with d = 2
    per_column = np.var(X, axis=0, ddof=1) / K

    def diagonal(prior, model):  # "diag" stores a vector, mclust's other models a matrix
        scale = prior.resolve(X, K, model).scale
        return scale if scale.ndim == 1 else np.diagonal(scale)

    for model in ("EEI", "VEI", "EVI", "VVI"):
        np.testing.assert_allclose(diagonal(GaussianMixturePrior(), model), per_column, rtol=1e-12)
        np.testing.assert_allclose(diagonal(MCLUST_PRIOR, model), mean_variance, rtol=1e-12)
    # The other models do not depend on it.
    for model in ("EII", "VII", "EEE", "EEV", "VEV", "VVV"):
        a, b = GaussianMixturePrior().resolve(X, K, model), MCLUST_PRIOR.resolve(X, K, model)
        np.testing.assert_array_equal(a.scale, b.scale)
    assert GaussianMixturePrior.from_dict(MCLUST_PRIOR.to_dict()) == MCLUST_PRIOR
    with pytest.raises(ValueError, match=r"diagonal_scale must be one of \('per_column', 'mean'\)"):
        GaussianMixturePrior(diagonal_scale="mclust")


#: The models whose update is mclust's ``mstep`` and ``me`` alike, with the tolerance: VEI
#: and VEV iterate (mclust to its own inner tolerance, 1.5e-8).
_MAP_AS_MCLUST = {"VII": 1e-10, "VVI": 1e-10, "EEE": 1e-10, "VVV": 1e-10,
                  "VEI": 1e-8, "VEV": 1e-8}  # fmt: skip


def test_map_models_and_m_steps_are_mclusts():
    """Under mclust's default prior (priorControl) our MAP M-step is mclust's, model by
    model, from the same responsibilities; where mclust's mstep and its EM (me) disagree, ours
    is the consistent one of the two, and the difference is pinned exactly."""
    X = pd.read_csv(DATA / "faithful.csv").to_numpy()
    z, mstep = _mclust_map_steps()
    _, me = _mclust_map_steps("map_me_step.csv")
    K, d = z.shape[1], X.shape[1]
    assert [m for m in MCLUST_MODELS if mstep[m]["has_map"]] == [
        m for m in MCLUST_MODELS if get_structure(m).has_map
    ]
    ours = {m: _map_mstep(X, z, m, MCLUST_PRIOR) for m in MCLUST_MODELS if get_structure(m).has_map}
    for model, rtol in _MAP_AS_MCLUST.items():
        weights, means, covs = ours[model]
        for theirs in (mstep[model], me[model]):
            np.testing.assert_allclose(weights, theirs["weights"], rtol=1e-12)
            np.testing.assert_allclose(means, theirs["means"], rtol=1e-12)
            np.testing.assert_allclose(covs, theirs["covariances"], rtol=rtol, err_msg=model)

    counts = z.sum(axis=0)
    xbar = z.T @ X / counts[:, None]
    kappa, nu, m0 = 0.01, d + 2.0, X.mean(axis=0)
    shrunk = (counts[:, None] * xbar + kappa * m0) / (counts + kappa)[:, None]
    # EII: mclust's EM (me) exactly. Its mstep takes the scatter about the shrunk means
    # rather than the component means, which adds n_k |xbar_k - mu_k|^2 to it.
    weights, means, covs = ours["EII"]
    np.testing.assert_allclose(covs, me["EII"]["covariances"], rtol=1e-12)
    np.testing.assert_allclose(means, me["EII"]["means"], rtol=1e-12)
    extra = (counts * np.square(xbar - shrunk).sum(axis=1)).sum() / (nu + 2 + (len(X) + K) * d)
    np.testing.assert_allclose(covs + extra * np.eye(d), mstep["EII"]["covariances"], rtol=1e-12)
    assert extra > 1e-9 * covs.max()  # the difference is real, if small
    # EEI: mclust's mstep's covariances; mclust leaves the means unshrunk (mstep and me
    # alike), although its covariance update counts the means' prior; ours are its mode.
    weights, means, covs = ours["EEI"]
    np.testing.assert_allclose(mstep["EEI"]["means"], xbar, rtol=1e-12)
    np.testing.assert_allclose(means, shrunk, rtol=1e-12)
    # EEI, EVI: mclust's mstep; its me leaves the K means' counts out of the volume's
    # denominator, although it adds their scatter (it does count them for VII and VVV).
    for model in ("EEI", "EVI"):
        np.testing.assert_allclose(ours[model][0], mstep[model]["weights"], rtol=1e-12)
        np.testing.assert_allclose(ours[model][2], mstep[model]["covariances"], rtol=1e-12)
        ratio = (nu + 2 + K + len(X)) / (nu + 2 + len(X))
        np.testing.assert_allclose(ours[model][2] * ratio, me[model]["covariances"], rtol=1e-12)
    # EEV: mclust's me exactly; its mstep drops the means' prior (Fortran mseevp sets the
    # shrinkage to zero), so that its means are the unshrunk component means.
    weights, means, covs = ours["EEV"]
    np.testing.assert_allclose(covs, me["EEV"]["covariances"], rtol=1e-12)
    np.testing.assert_allclose(means, me["EEV"]["means"], rtol=1e-12)
    np.testing.assert_allclose(mstep["EEV"]["means"], xbar, rtol=1e-12)


def _map_grid(X, n_components):
    """select_model under mclust's prior over the ten MAP models, the diagonal ones in a grid
    of their own: K x model BIC (our sign). (A grid starts some cells from other models'
    fits, so that its cells depend a little on which models it holds.)"""
    from bayes_gmm import select_model

    models = [m for m in MCLUST_MODELS if get_structure(m).has_map]
    diagonal = [m for m in models if get_structure(m).is_diagonal]
    tables = [
        select_model(
            X, n_components=n_components, covariance_types=group, prior=MCLUST_PRIOR,
            random_state=0,
        ).criterion_table()
        for group in ([m for m in models if m not in diagonal], diagonal)
    ]  # fmt: skip
    return pd.concat(tables, axis=1)[models]


def test_map_grid_reaches_mclusts_bic_under_its_prior():
    """select_model(prior=...) against mclustBIC(prior = priorControl()) on Old Faithful,
    for the ten models with a prior: at K = 1 equal (mclust's one-component fits, as ours,
    do not depend on the model within each family), elsewhere as good or better."""
    X = pd.read_csv(DATA / "faithful.csv")
    mclust = pd.read_csv(DATA / "map_bic.csv").set_index("G")
    ours = _map_grid(X, mclust.index)
    diff = ours[list(mclust.columns)] + mclust  # our sign is minus mclust's
    np.testing.assert_allclose(diff.loc[1], 0.0, atol=1e-3)
    # VVI,5 is 0.31 above mclust's: our cell is a higher posterior mode (log posterior
    # -1290.04 against -1290.91 from mclust's start) with a lower likelihood.
    assert (diff.drop(columns="VVI").to_numpy() <= 0.01).all(), diff
    # mclust's best under the prior (-2314.549) is ours too.
    assert ours.stack().idxmin() == (3, "EEE")
    assert mclust.stack().idxmax() == (3, "EEE")


def test_map_cell_keeps_the_higher_posterior_mode():
    """Under a prior a grid cell keeps the start with the highest log posterior, which need
    not have the highest likelihood: faithful's VVI,5 is a higher mode than EM from mclust's
    start (its hc partition, faithful.hclass.csv) reaches, with a BIC 0.31 above mclust's."""
    from bayes_gmm import select_model

    X = pd.read_csv(DATA / "faithful.csv")
    K = 5
    cell = select_model(
        X, n_components=range(1, K + 1), covariance_types=["EEI", "VEI", "EVI", "VVI"],
        prior=MCLUST_PRIOR, random_state=0,
    )  # fmt: skip
    ours = cell.estimators[("VVI", K)]
    labels = pd.read_csv(DATA / "faithful.hclass.csv")[str(K)].to_numpy() - 1
    weights, means, covs = _map_mstep(X.to_numpy(), np.eye(K)[labels], "VVI", MCLUST_PRIOR)
    theirs = GaussianMixture(
        K, covariance_type="VVI", prior=MCLUST_PRIOR, weights_init=weights, means_init=means,
        precisions_init=1 / np.diagonal(covs, axis1=1, axis2=2), tol=1e-10, max_iter=5000,
    ).fit(X)  # fmt: skip
    assert ours.history_[-1] == pytest.approx(-1290.04, abs=0.01)
    assert theirs.history_[-1] == pytest.approx(-1290.91, abs=0.01)
    mclust = -pd.read_csv(DATA / "map_bic.csv").set_index("G").loc[K, "VVI"]
    assert ours.bic(X) - mclust == pytest.approx(0.31, abs=0.01)
    # From mclust's start ours converges where mclust's EM does when run to convergence;
    # its table stops earlier, on the likelihood's change, 0.07 lower.
    assert theirs.bic(X) - mclust == pytest.approx(0.07, abs=0.01)


def test_map_grid_on_iris_finds_mclusts_best():
    """mclustBIC(iris, prior = priorControl()) (map_bic_iris.csv): K = 1 equal for all ten
    models, and mclust's best, VEV,2 (-580.81), is ours at its BIC or better. (Elsewhere
    cells differ both ways: EEI follows mclust's mstep, 0.23 short of its me at K = 2, and
    either side finds optima the other misses, by up to 109 BIC units.)"""
    X = pd.read_csv(DATA / "iris.csv")
    mclust = pd.read_csv(DATA / "map_bic_iris.csv").set_index("G")
    ours = _map_grid(X, mclust.index)
    diff = ours[list(mclust.columns)] + mclust
    np.testing.assert_allclose(diff.loc[1], 0.0, atol=1e-3)
    assert ours.stack().idxmin() == (2, "VEV") == mclust.stack().idxmax()
    assert diff.loc[2, "VEV"] <= 0.01


@pytest.mark.parametrize("model", [m for m in MCLUST_MODELS if get_structure(m).has_map])
def test_map_objective_never_decreases(model):
    """The log posterior (log-likelihood + the model's log prior density) of every MAP model
    rises at every iteration: each model's update is the exact mode of its prior (including
    mclust's improper ones), so that EM is exact for it."""
    X = _iris()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        gm = GaussianMixture(
            3, covariance_type=model, init_params="random", max_iter=150, tol=0.0,
            random_state=2, prior=GaussianMixturePrior(),
        ).fit(X)  # fmt: skip
    history = np.array(gm.history_)
    assert np.all(np.diff(history) >= -1e-12 * np.abs(history[1:]))
    assert history[-1] - history[0] > 1.0  # it did climb
    expected = gm.score(X) * len(X) + gm.prior_.log_density(gm.weights_, gm.means_, gm.covariances_)
    assert history[-1] == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("family", [("EII", "VII"), ("EEI", "VEI", "EVI", "VVI"),
                                    ("EEE", "EEV", "VEV", "VVV")])  # fmt: skip
def test_one_component_map_is_the_familys(family):
    """For K = 1 the models of a family coincide, and so do their MAP fits (as mclust's,
    which fits mvnXII, mvnXXI or mvnXXX whatever the model)."""
    X = _iris()
    fits = [
        GaussianMixture(1, covariance_type=m, prior=GaussianMixturePrior()).fit(X) for m in family
    ]
    from bayes_gmm._gaussian import full_covariances

    covs = [full_covariances(gm.covariances_, gm.covariance_type, 1, 4) for gm in fits]
    for gm, cov in zip(fits[1:], covs[1:], strict=True):
        np.testing.assert_allclose(gm.means_, fits[0].means_, rtol=1e-12)
        np.testing.assert_allclose(cov, covs[0], rtol=1e-10, err_msg=gm.covariance_type)
        assert gm.score(X) == pytest.approx(fits[0].score(X), rel=1e-12)


# --------------------------------------------------------------------------- M-steps
def _scatter(rng, K, d):
    A = rng.normal(size=(K, d, d + 3))
    scales = rng.uniform(0.2, 5.0, size=K)
    return (A @ np.swapaxes(A, 1, 2)) * scales[:, None, None], rng.uniform(5.0, 40.0, size=K)


def _objective(W, n, S):
    _, logdet = np.linalg.slogdet(S)
    return float(n @ logdet + np.trace(np.linalg.solve(S, W), axis1=1, axis2=2).sum())


def _decompose(S):
    """Volumes, shapes (descending eigenvalues / volume) and eigenvectors of each matrix."""
    values, vectors = np.linalg.eigh(S)
    values, vectors = values[:, ::-1], vectors[:, :, ::-1]
    volumes = np.exp(np.log(values).mean(axis=1))
    return volumes, values / volumes[:, None], vectors


def _assert_structure(model, S):
    K, d, _ = S.shape
    volumes, shapes, _ = _decompose(S)
    v, a, o = model
    if v == "E":
        np.testing.assert_allclose(volumes, volumes[0], rtol=1e-8)
    diagonal = np.allclose(S, np.eye(d) * np.diagonal(S, axis1=1, axis2=2)[:, None, :])
    if o == "I":
        assert diagonal
    if a == "I":
        np.testing.assert_allclose(shapes, 1.0, rtol=1e-8)
    if a == "E":
        np.testing.assert_allclose(shapes, shapes[:1].repeat(K, 0), rtol=1e-7)
    if o == "E":  # a common orientation: the matrices commute
        for k in range(1, K):
            np.testing.assert_allclose(S[0] @ S[k], S[k] @ S[0], atol=1e-8 * np.abs(S).max() ** 2)


@pytest.mark.parametrize("model", NEW_MODELS)
def test_m_step_has_the_models_structure_and_beats_simpler_models(model):
    rng = np.random.default_rng(0)
    W, n = _scatter(rng, 3, 4)
    S = get_structure(model).covariances_from_scatter(W, n)
    _assert_structure(model, S)
    # Every model nested in this one is a special case: its optimum cannot be better.
    for other in MCLUST_MODELS:
        s = get_structure(other)
        if other != model and get_structure(model).nests(s) and not s.is_sklearn:
            assert _objective(W, n, S) <= _objective(W, n, s.covariances_from_scatter(W, n)) + 1e-8
    # ...and the unconstrained optimum W_k / n_k is at least as good as this one.
    assert _objective(W, n, W / n[:, None, None]) <= _objective(W, n, S) + 1e-8


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    model=st.sampled_from(NEW_MODELS),
    K=st.integers(1, 4),
    d=st.integers(2, 4),
)
def test_m_step_never_worse_than_the_covariances_it_starts_from(seed, model, K, d):
    """The inner iterations start at the previous covariances, so EM cannot go down."""
    rng = np.random.default_rng(seed)
    structure = get_structure(model)
    W, n = _scatter(rng, K, d)
    W_other, n_other = _scatter(rng, K, d)
    previous = structure.covariances_from_scatter(W_other, n_other)  # any model member
    S = structure.covariances_from_scatter(W, n, previous)
    assert _objective(W, n, S) <= _objective(W, n, previous) + 1e-9 * abs(_objective(W, n, S))
    _assert_structure(model, S)


# --------------------------------------------------------------------------- EM
@st.composite
def _mixture_data(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    d = draw(st.integers(2, 3))
    K = draw(st.integers(1, 3))
    n = draw(st.integers(15 * K * (d + 1), 200))
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 3, size=(K, d))[rng.integers(K, size=n)] + rng.standard_normal((n, d))
    X = X @ rng.normal(size=(d, d))  # correlated, so that orientations matter
    return X, K, seed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mixture_data(), model=st.sampled_from(MCLUST_MODELS), use_prior=st.booleans())
def test_objective_never_decreases_for_every_model(data, model, use_prior):
    X, K, seed = data
    use_prior = use_prior and get_structure(model).has_map
    gm = GaussianMixture(
        K,
        covariance_type=model,
        init_params="random",
        max_iter=60,
        tol=0.0,
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
            assume(False)
    history = gm.history_
    scale = np.maximum(1.0, np.abs(history[:-1]))
    assert np.all(np.diff(history) >= -1e-10 * scale)
    assert history[-1] == gm.log_likelihood_


@pytest.mark.parametrize("model", NEW_MODELS)
def test_compiled_kernel_equals_numpy_em(model):
    X = _iris()
    w = np.ones(len(X))
    priors = [None, GaussianMixturePrior()] if get_structure(model).has_map else [None]
    for prior in priors:
        start = GaussianMixture(3, covariance_type=model, random_state=1, max_iter=0, prior=prior)
        start.fit(X)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ref = GaussianMixture(
                3, covariance_type=model, random_state=1, max_iter=40, tol=0.0, prior=prior
            ).fit(X)
        (run,) = batched_em(
            X,
            w,
            model,
            start.weights_[None],
            (start.means_ - X.mean(axis=0))[None],
            start.covariances_[None],
            tol=0.0,
            max_iter=40,
            prior=start.prior_,
        )
        assert run.n_iter == ref.n_iter_ == 40
        np.testing.assert_allclose(run.history, ref.history_, rtol=1e-11)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_iris_two_components_equal_mclust(model):
    """GaussianMixture alone reaches mclust's BIC for every model on iris, K = 2."""
    X = _iris()
    mclust = pd.read_csv(DATA / "iris.bic.csv").set_index("G").loc[2, model]
    gm = GaussianMixture(2, covariance_type=model, n_init=10, random_state=0, tol=1e-8).fit(X)
    assert gm.bic(X) <= -mclust + 1e-3
    assert gm.bic(X) >= -mclust - 1.0  # VVE: mclust stops 0.8 short of the optimum
    shape = (2, 4, 4) if not get_structure(model).is_sklearn else gm.covariances_.shape
    assert gm.covariances_.shape == shape
    if not get_structure(model).is_sklearn:
        _assert_structure(model, gm.covariances_)


@pytest.mark.parametrize("model", MCLUST_MODELS)
def test_covariances_from_full_keeps_a_solution_of_the_model(model):
    """Converting a model's own solution (as (K, d, d) matrices) gives it back: the
    conversion is the model's M-step, and a fixed point of EM is a fixed point of it."""
    from bayes_gmm._gaussian import full_covariances

    X = _iris()
    gm = GaussianMixture(2, covariance_type=model, random_state=0, tol=1e-10).fit(X)
    structure = get_structure(model)
    full = full_covariances(gm.covariances_, model, 2, X.shape[1])
    again = structure.covariances_from_full(full, gm.weights_)
    np.testing.assert_allclose(again, gm.covariances_, rtol=1e-6, atol=1e-9)
    assert structure.shares_covariance == (model in ("EEE", "tied"))


def test_mclust_code_and_scikit_learn_name_give_the_same_fit():
    X = _iris()
    for alias, code in SKLEARN_NAMES.items():
        a = GaussianMixture(3, covariance_type=alias, random_state=0).fit(X)
        b = GaussianMixture(3, covariance_type=code, random_state=0).fit(X)
        np.testing.assert_array_equal(a.covariances_, b.covariances_)
        assert a.bic(X) == b.bic(X)


@pytest.mark.parametrize("model", NEW_MODELS)
def test_duplicated_rows_warn_and_stay_usable(model):
    # Three distinct points, each repeated: three components collapse onto them.
    X = np.repeat([[0.0, 0.0], [5.0, 1.0], [2.0, 7.0]], 10, axis=0)
    with pytest.warns(DegenerateFitWarning):
        gm = GaussianMixture(3, covariance_type=model, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.score_samples(X)))
    assert np.all(np.isfinite(gm.covariances_))


@pytest.mark.parametrize("name", ["full", "tied", "diag", "spherical"])
def test_layout_e_step_math_is_the_gaussian_density(name):
    """Each storage layout's precision factors, features and natural parameters give the
    Gaussian log-density, and its conversions agree with its full matrices."""
    from scipy.stats import multivariate_normal

    from bayes_gmm import _gaussian as g
    from bayes_gmm.structures import LAYOUTS

    layout = LAYOUTS[name]
    rng = np.random.default_rng(5)
    K, d = 3, 4
    A = rng.normal(size=(K, d, d))
    full = A @ np.swapaxes(A, 1, 2) + np.eye(d)
    covs = layout.from_full(full, np.full(K, 1.0 / K))
    means, Xc = rng.normal(size=(K, d)), rng.normal(size=(6, d))
    assert layout.covariance_shape(K, d) == covs.shape and layout.shared == (name == "tied")
    assert layout.stores_matrices == (name in ("full", "tied"))
    prec_chol, used, repaired = layout.precision_cholesky(covs)
    np.testing.assert_array_equal(used, covs)
    assert repaired == []
    as_full = layout.to_full(covs, K, d)
    feats = g.features(Xc, name)
    assert feats.shape == (6, layout.feature_width(d))
    eta, const = g.natural_parameters(means, prec_chol, name)
    expected = [multivariate_normal(means[k], as_full[k]).logpdf(Xc) for k in range(K)]
    np.testing.assert_allclose(g.linear_log_prob(feats, eta, const, name, prec_chol), expected)
    np.testing.assert_allclose(layout.covariances_from_cholesky(prec_chol), covs)
    for k in range(K):
        one = layout.to_full(layout.component(covs, k), 1, d).reshape(d, d)
        np.testing.assert_array_equal(one, as_full[k])
    precisions = layout.precisions_from_cholesky(prec_chol)
    np.testing.assert_allclose(layout.covariances_from_precisions(precisions), covs)
    smallest = np.linalg.eigvalsh(as_full).min(axis=-1)
    np.testing.assert_allclose(np.min(layout.smallest_variances(covs)), smallest.min())
    kernel = layout.to_full(covs, K, d)[None]  # the compiled kernel's (A, K, d, d) layout
    if name == "tied":
        kernel = kernel[:, :1]
    np.testing.assert_array_equal(layout.from_kernel(kernel)[0], covs)
    summed = layout.second_moments_from_full(as_full)  # spherical's: the trace, not the mean
    per_variance = d if name == "spherical" else 1
    np.testing.assert_allclose(summed, layout.from_full(as_full, np.ones(K)) * per_variance)
