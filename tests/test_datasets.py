"""Shipped data and simulators: shapes, labels, and that draws follow the stated truth."""

import numpy as np
import pytest

from bayes_gmm.datasets import load_faithful, load_iris, make_foot_sizes, make_mixture


def test_load_faithful_frame_and_array():
    df = load_faithful()
    assert list(df.columns) == ["eruptions", "waiting"]
    assert df.shape == (272, 2)
    arr = load_faithful(as_frame=False)
    np.testing.assert_array_equal(arr, df.to_numpy())
    # Known summary values of R's faithful data set.
    assert df["eruptions"].mean() == pytest.approx(3.487783, abs=1e-6)
    assert df["waiting"].mean() == pytest.approx(70.897059, abs=1e-6)


def test_load_iris_species_as_labels():
    X, species = load_iris()
    assert X.shape == (150, 4)
    assert list(X.columns) == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert list(species.cat.categories) == ["setosa", "versicolor", "virginica"]
    assert species.value_counts().tolist() == [50, 50, 50]
    Xa, codes = load_iris(as_frame=False)
    np.testing.assert_array_equal(Xa, X.to_numpy())
    np.testing.assert_array_equal(codes, species.cat.codes.to_numpy())
    # Setosa has the small petals: a label check that cannot pass by accident.
    assert (
        X["petal_length"][species == "setosa"].max() < X["petal_length"][species != "setosa"].min()
    )


def test_make_foot_sizes_matches_the_seed_example():
    X, labels = make_foot_sizes(random_state=1)
    assert X.shape == (1000, 1) and labels.shape == (1000,)
    assert np.bincount(labels).tolist() == [700, 300]
    # Shuffled, not grouped.
    assert 0.1 < labels[:100].mean() < 0.6
    for k, (mu, sd, n) in enumerate([(240, 7, 700), (270, 6, 300)]):
        x = X[labels == k, 0]
        # 4 standard errors of the mean and of the standard deviation.
        assert abs(x.mean() - mu) < 4 * sd / np.sqrt(n)
        assert abs(x.std(ddof=1) - sd) < 4 * sd / np.sqrt(2 * (n - 1))
    X2, labels2 = make_foot_sizes(random_state=1)
    np.testing.assert_array_equal(X, X2)
    np.testing.assert_array_equal(labels, labels2)


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_make_mixture_drawn_truth_is_respected(covariance_type):
    X, labels, truth = make_mixture(
        20_000, 3, 2, covariance_type=covariance_type, separation=5.0, random_state=3
    )
    assert X.shape == (20_000, 2)
    assert truth["covariance_type"] == covariance_type
    expected = {"full": (3, 2, 2), "tied": (2, 2), "diag": (3, 2), "spherical": (3,)}
    assert truth["covariances"].shape == expected[covariance_type]
    full = truth["full_covariances"]
    assert full.shape == (3, 2, 2)
    np.testing.assert_allclose(truth["weights"].sum(), 1.0)
    dist = np.linalg.norm(truth["means"][:, None] - truth["means"][None], axis=-1)
    assert dist[np.triu_indices(3, 1)].min() >= 5.0
    counts = np.bincount(labels, minlength=3)
    n = len(labels)
    # Multinomial counts within 4 standard deviations.
    w = truth["weights"]
    assert np.all(np.abs(counts / n - w) < 4 * np.sqrt(w * (1 - w) / n))
    for k in range(3):
        xk = X[labels == k]
        se = np.sqrt(np.diag(full[k]) / len(xk))
        assert np.all(np.abs(xk.mean(axis=0) - truth["means"][k]) < 4 * se)
        # Sample covariance within 0.1 (variances are <= 1.5, n_k > 2000: se ~ 0.04).
        np.testing.assert_allclose(np.cov(xk.T), full[k], atol=0.1)
    if covariance_type == "tied":
        np.testing.assert_allclose(full[0], full[1])
    if covariance_type in ("diag", "spherical"):
        assert np.all(full[:, 0, 1] == 0)


def test_make_mixture_given_parameters():
    means = [[0.0], [10.0]]
    X, labels, truth = make_mixture(
        4000,
        weights=[1, 3],
        means=means,
        covariances=[1.0, 4.0],
        covariance_type="spherical",
        random_state=0,
    )
    assert X.shape == (4000, 1)
    np.testing.assert_allclose(truth["weights"], [0.25, 0.75])
    np.testing.assert_array_equal(truth["means"], means)
    assert abs(X[labels == 1, 0].std() - 2.0) < 0.1
    a = make_mixture(100, random_state=5)
    b = make_mixture(100, random_state=5)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_samples": 0}, r"n_samples must be an integer >= 1, got 0\."),
        ({"n_components": 2.5}, r"n_components must be an integer >= 1, got 2\.5"),
        ({"covariance_type": "banana"}, "covariance_type must be one of"),
        ({"weights": [1, -1, 1]}, "weights must be 3 non-negative"),
        ({"covariances": np.eye(2), "covariance_type": "full"}, r"must have shape \(3, 2, 2\)"),
        ({"covariances": -np.ones(3), "covariance_type": "spherical"}, "positive definite"),
        ({"separation": -1}, "separation must be a finite number >= 0"),
        # Infinite separation used to overflow the box of means; now it is refused.
        ({"separation": np.inf}, r"separation must be a finite number >= 0, got inf"),
        ({"separation": np.nan}, "separation must be a finite number >= 0"),
    ],
)
def test_make_mixture_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_mixture(**kwargs)
