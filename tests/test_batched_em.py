"""The compiled EM of several starts equals GaussianMixture.fit start by start (every structure,
MLE and MAP)."""

import copy
import warnings

import numpy as np
import pytest

from bayes_gmm import GaussianMixture, GaussianMixturePrior
from bayes_gmm._batched_em import batched_em
from bayes_gmm.datasets import load_faithful, make_mixture

COVARIANCE_TYPES = ["full", "tied", "diag", "spherical"]


def _starts(X, K, ctype, n_starts, seed):
    """Explicit initial (weights, means, precisions) from random hard partitions."""
    rng = np.random.default_rng(seed)
    n, d = X.shape
    out = []
    for _ in range(n_starts):
        # Sort rows into clusters along a random direction so the starts differ in quality.
        direction = rng.normal(size=d)
        labels = np.empty(n, dtype=int)
        labels[np.argsort(X @ direction)] = np.arange(n) * K // n
        weights = np.bincount(labels, minlength=K) / n
        means = np.array([X[labels == k].mean(axis=0) for k in range(K)])
        covs = np.array([np.cov(X[labels == k].T) + 1e-3 * np.eye(d) for k in range(K)])
        if ctype == "full":
            prec = np.linalg.inv(covs)
        elif ctype == "tied":
            prec = np.linalg.inv(np.tensordot(weights, covs, axes=1))
        elif ctype == "diag":
            prec = 1.0 / np.diagonal(covs, axis1=1, axis2=2)
        else:
            prec = 1.0 / np.diagonal(covs, axis1=1, axis2=2).mean(axis=1)
        out.append((weights, means, prec))
    return out


@pytest.mark.parametrize("ctype", COVARIANCE_TYPES)
@pytest.mark.parametrize("prior", [None, GaussianMixturePrior(weight_concentration=2.0)])
@pytest.mark.parametrize("warm", [False, True])
@pytest.mark.parametrize("data", ["faithful", "4-D"])
def test_batched_equals_one_by_one(ctype, prior, warm, data):
    if data == "faithful":
        X, K = load_faithful(as_frame=False), 3
        # Non-uniform integer weights exercise the weighted path (and equal repeated rows).
        w = np.random.default_rng(1).integers(1, 3, size=X.shape[0]).astype(float)
    else:  # unit weights (the kernel's other log-likelihood path), d > 2 triangles
        X, K = make_mixture(300, 4, 4, random_state=0)[0], 4
        w = np.ones(X.shape[0])
    max_iters = [5, 40, 200, 500]
    estimators = []
    for (weights, means, prec), max_iter in zip(
        _starts(X, K, ctype, 4, seed=0), max_iters, strict=True
    ):
        estimators.append(
            GaussianMixture(
                K,
                covariance_type=ctype,
                tol=1e-6,
                max_iter=max_iter,
                weights_init=weights,
                means_init=means,
                precisions_init=prec,
                prior=prior,
            )
        )
    if warm:  # continue from short fits, as the selection grid does
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for est, max_iter in zip(estimators, max_iters, strict=True):
                est.set_params(max_iter=3).fit(X, sample_weight=w)
                est.set_params(warm_start=True, max_iter=max_iter)
    reference = [copy.deepcopy(est) for est in estimators]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning of the 5-iteration start
        for est in reference:
            est.fit(X, sample_weight=w)
    center = w @ X / w.sum()
    if warm:
        starts = [(e.weights_, e.means_ - center, e.covariances_) for e in estimators]
    else:
        starts = [
            (e.weights_init, e.means_init - center, np.linalg.inv(e.precisions_init))
            if ctype in ("full", "tied")
            else (e.weights_init, e.means_init - center, 1.0 / e.precisions_init)
            for e in estimators
        ]
    resolved = None if prior is None else prior.resolve(X, K, ctype, sample_weight=w)
    runs = batched_em(
        X,
        w,
        ctype,
        *(np.stack(part) for part in zip(*starts, strict=True)),
        tol=1e-6,
        max_iter=max_iters,
        prior=resolved,
    )
    assert all(run is not None for run in runs)
    n_iters = set()
    for run, ref in zip(runs, reference, strict=True):
        ours = GaussianMixture(K, covariance_type=ctype, prior=prior)
        ours._store_run(run, center, w.sum(), X.shape[1], resolved)
        assert ours.n_iter_ == ref.n_iter_
        assert ours.converged_ == ref.converged_
        n_iters.add(ours.n_iter_)
        # 1e-10: the kernel adds in another order than numpy.
        for name in ("weights_", "means_", "covariances_", "precisions_cholesky_", "history_"):
            np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-10)
        assert ours.log_likelihood_ == pytest.approx(ref.log_likelihood_, rel=1e-12)
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-10)
    assert len(n_iters) > 1  # the starts finished at different iterations


def test_degenerate_start_is_left_to_the_caller():
    X = load_faithful(as_frame=False)
    w = np.ones(X.shape[0])
    center = X.mean(axis=0)
    weights, means, prec = _starts(X, 2, "full", 1, seed=0)[0]
    covs = np.linalg.inv(prec)
    # A component at a far-away point loses all its weight: GaussianMixture freezes it
    # and warns; the kernel stops that start and leaves it to the caller (None).
    far = np.array([means[0], [1e4, 1e4]])
    # A covariance that is not positive definite: GaussianMixture repairs it and warns.
    indefinite = covs.copy()
    indefinite[1] = [[1.0, 2.0], [2.0, 1.0]]
    runs = batched_em(
        X,
        w,
        "full",
        np.stack([weights] * 3),
        np.stack([means, far, means]) - center,
        np.stack([covs, covs, indefinite]),
        tol=1e-6,
        max_iter=100,
    )
    assert runs[0] is not None and runs[0].converged
    assert runs[1] is None and runs[2] is None


def test_kernel_exp_is_accurate():
    """The vectorized exp of the E-step against numpy's, over its whole range."""
    from bayes_gmm._em_kernel import _exp_rows

    values = np.concatenate(
        [-np.geomspace(1e-12, 708.0, 5000), [0.0, -0.0, -708.0, -708.5, -1e4, -np.inf]]
    )
    top = np.linspace(-3.0, 3.0, values.size)  # each row's largest log density
    rows = np.stack([values + top, values[::-1] + top])
    expected = np.exp(rows - top)
    total = np.empty(values.size)
    _exp_rows(rows, top, np.empty(values.size, dtype=np.int64), total)
    for out, exact, shifted in zip(rows, (values, values[::-1]), expected, strict=True):
        inside = exact >= -708.0
        np.testing.assert_allclose(out[inside], shifted[inside], rtol=1e-15, atol=0)
        # Below -708 exp is under 3.3e-308: the kernel's 0 differs from it by less.
        assert np.all(out[exact < -709.0] == 0.0)
    np.testing.assert_array_equal(total, rows[0] + rows[1])


def test_kernel_is_compiled_once_whatever_the_input_types():
    """Odd dtypes and memory layouts reach the kernel as its one compiled signature."""
    from bayes_gmm import _em_kernel

    X = load_faithful(as_frame=False)
    weights, means, prec = _starts(X, 2, "full", 1, seed=0)[0]
    covs = np.asfortranarray(np.linalg.inv(prec))
    prior = GaussianMixturePrior(covariance_prior=np.asfortranarray([[2.0, 0.5], [0.5, 9.0]]))
    for ctype, kwargs, max_iter in [
        ("full", dict(reg_covar=0), 50),  # an int
        ("full", dict(prior=prior.resolve(X, 2, "full")), np.broadcast_to(50, (2,))),  # read-only
        ("diag", dict(prior=prior.resolve(X, 2, "diag")), [np.int32(50)] * 2),
    ]:
        start = covs if ctype == "full" else np.diagonal(covs, axis1=1, axis2=2).T.copy().T
        two = np.asfortranarray([start, start])  # two starts, Fortran-ordered
        runs = batched_em(
            np.asfortranarray(X),
            np.ones(X.shape[0], dtype=int),
            ctype,
            np.asfortranarray([weights, weights]),
            np.asfortranarray([means, means]) - X.mean(axis=0),
            two,
            tol=1e-3,
            max_iter=max_iter,
            **kwargs,
        )
        assert runs[0] is not None and runs[1] is not None
    assert len(_em_kernel.run_starts.signatures) == 1


@pytest.mark.parametrize("ctype", [*COVARIANCE_TYPES, "VEV", "EVE"])
def test_starts_on_worker_threads_equal_one_thread(ctype, monkeypatch):
    """Shared out over threads, every start ends exactly (bit for bit) where it ends alone."""
    import bayes_gmm._batched_em as batched
    import bayes_gmm._gaussian as g

    X, K = make_mixture(400, 3, 3, random_state=2)[0], 3
    w = np.ones(X.shape[0])
    center = X.mean(axis=0)
    layout = "full" if ctype not in COVARIANCE_TYPES else ctype
    starts = _starts(X, K, layout, 6, seed=3)
    weights = np.stack([s[0] for s in starts])
    means = np.stack([s[1] for s in starts]) - center
    if layout in ("full", "tied"):
        covs = np.linalg.inv(np.stack([s[2] for s in starts]))
    else:
        covs = 1.0 / np.stack([s[2] for s in starts])
    if ctype not in COVARIANCE_TYPES:  # a start of the structure: one M-step of its own
        from bayes_gmm.structures import get_structure

        counts = weights * X.shape[0]
        covs = np.stack(
            [
                get_structure(ctype).covariances_from_scatter(c * n[:, None, None], n, c)
                for c, n in zip(covs, counts, strict=True)
            ]
        )
    max_iter = [3, 50, 400, 20, 400, 1]

    def fit():
        return batched_em(X, w, ctype, weights, means, covs, tol=1e-8, max_iter=max_iter)

    monkeypatch.setattr(g, "N_WORKERS", 1)
    alone = fit()
    submitted = []
    pool = g.worker_pool()

    class Spy:
        def submit(self, fn, *args):
            submitted.append(fn)
            return pool.submit(fn, *args)

    monkeypatch.setattr(g, "N_WORKERS", 2)
    monkeypatch.setattr(g, "worker_pool", lambda: Spy())
    monkeypatch.setattr(batched, "MIN_PARALLEL_WORK", 0)
    monkeypatch.setattr(batched, "MIN_PARALLEL_ITERATION_WORK", 0)
    shared = fit()
    assert submitted  # the starts did go to a worker
    assert all(run is not None for run in alone)
    for a, b in zip(alone, shared, strict=True):
        assert a.n_iter == b.n_iter and a.converged == b.converged
        assert a.history == b.history
        for name in ("weights", "means", "covariances", "prec_chol"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("ctype", ["full", "tied", "diag", "spherical", "VEV", "EVE", "EII"])
def test_compiled_responsibilities_equal_the_estimators(ctype):
    """The kernel's log p(x) and responsibilities (the grid's) equal GaussianMixture's."""
    from bayes_gmm import _gaussian as g
    from bayes_gmm._batched_em import log_norm_and_resp

    X = load_faithful(as_frame=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = GaussianMixture(3, covariance_type=ctype, random_state=0, max_iter=20).fit(X)
    center = X.mean(axis=0)
    feats = np.ascontiguousarray(g.features(X - center, ctype).T)
    log_norm, resp = log_norm_and_resp(
        feats, ctype, est.weights_, est.means_ - center, est.covariances_
    )
    expected_log_norm, expected_resp = est._log_norm_and_resp(X)
    np.testing.assert_allclose(log_norm, expected_log_norm, rtol=1e-12)
    np.testing.assert_allclose(resp, expected_resp, rtol=1e-9, atol=1e-14)
    # A covariance that is not positive definite: no answer, for the caller to fall back.
    bad = np.array(g.full_covariances(est.covariances_, ctype, 3, 2))
    bad[:, 0, 0] = -1.0
    assert log_norm_and_resp(feats, "full", est.weights_, est.means_ - center, bad) is None
