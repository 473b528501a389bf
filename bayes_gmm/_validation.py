"""Input validation shared by every public entry point.

Each check raises an error that says what is wrong *and* what to do about it.
"""

from __future__ import annotations

import numbers
import warnings

import numpy as np

__all__ = [
    "DataWarning",
    "check_data",
    "check_int",
    "check_n_components",
    "check_probability",
    "check_real",
    "check_sample_weight",
    "column_extremes",
    "warn_constant_columns",
]


class DataWarning(UserWarning):
    """The data are usable but something about them deserves attention."""


def _describe_nonfinite(X):
    bad = ~np.isfinite(X)
    rows = np.flatnonzero(bad.any(axis=1))
    cols = np.flatnonzero(bad.any(axis=0))
    kind = "NaN" if np.isnan(X).any() else "infinite values"
    shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if rows.size > 5 else "")
    hint = (
        ', or pass missing="em" to fit with NaN treated as missing at random'
        if kind == "NaN"
        else ""
    )
    return (
        f"Input X contains {kind} in {rows.size} row(s) (first: {shown}) and column(s) "
        f"{cols.tolist()}. Drop or impute those rows first (for example "
        f"`X = X[np.isfinite(X).all(axis=1)]`, or `df.dropna()` for a DataFrame){hint}."
    )


def check_data(X, *, min_samples=1, name="X", dtype=(np.float64, np.float32), allow_nan=False):
    """Turn array-like input into a finite 2-D float array, or explain why not.

    This does not set ``n_features_in_``; estimators use scikit-learn's
    ``validate_data`` for that and call :func:`check_finite_numeric` first.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or (n_samples,)
        A 1-D input is read as one feature.
    min_samples : int, default=1
    name : str
        The argument's name, used in messages.
    allow_nan : bool, default=False
        Let NaN through (missing values); infinite values are still refused.

    Returns
    -------
    ndarray of shape (n_samples, n_features)
    """
    X = check_finite_numeric(X, name=name, allow_nan=allow_nan)
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_samples, n_features), got {X.ndim} dimensions "
            f"with shape {X.shape}."
        )
    n_samples, n_features = X.shape
    if n_features == 0:
        raise ValueError(f"{name} has 0 features; pass at least one column.")
    if n_samples < min_samples:
        raise ValueError(f"{name} has {n_samples} sample(s) but at least {min_samples} are needed.")
    if X.dtype not in dtype:
        X = X.astype(np.float64)
    return X


def check_finite_numeric(X, name="X", allow_nan=False):
    """Reject strings, objects, complex numbers, NaN and inf with an actionable message.

    ``allow_nan=True`` lets NaN through (read as missing values); inf is still refused.
    """
    if hasattr(X, "dtypes") and hasattr(X, "columns"):  # a DataFrame: name the bad columns
        from pandas.api.types import is_bool_dtype, is_numeric_dtype

        non_numeric = [
            str(col)
            for col, dt in zip(X.columns, X.dtypes, strict=True)
            if not (is_numeric_dtype(dt) or is_bool_dtype(dt))
        ]
        if non_numeric:
            raise ValueError(
                f"{name} has non-numeric column(s) {non_numeric}. Select the numeric columns "
                "(e.g. `df.select_dtypes('number')`) or encode them as numbers first."
            )
    if hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(
            f"Sparse data was passed for {name}, but dense data is required. Use '.toarray()' "
            "to convert to a dense numpy array."
        )
    try:
        arr = np.asarray(X)
    except Exception as exc:  # ragged lists and the like
        raise ValueError(
            f"{name} could not be read as a numeric array ({exc}). Pass a 2-D array of numbers."
        ) from exc
    if arr.dtype.kind == "c":
        raise ValueError(
            f"Complex data not supported: {name} holds complex numbers. Pass real numbers "
            "(e.g. the real and imaginary parts as separate columns)."
        )
    if arr.dtype.kind in "OUSV":
        try:
            arr = arr.astype(np.float64)
        except ValueError as exc:
            raise ValueError(
                f"{name} must contain only numbers, but some values cannot be converted ({exc}). "
                "Convert or drop the non-numeric columns first."
            ) from exc
        except TypeError as exc:
            raise TypeError(
                f"{name} must contain only numbers: {exc}. Convert or drop the non-numeric "
                "values first."
            ) from exc
    if arr.dtype.kind == "b" or arr.dtype.kind in "iu":
        arr = arr.astype(np.float64)
    if arr.size == 0:
        what = (
            f"0 feature(s) (shape={arr.shape}) while a minimum of 1 is required"
            if arr.ndim == 2 and arr.shape[0] > 0
            else f"0 sample(s) (shape={arr.shape}) while a minimum of 1 is required"
        )
        raise ValueError(
            f"Found array with {what}: {name} is empty. Pass at least one sample with at least "
            "one feature."
        )
    if not np.all(np.isfinite(arr)) and not (allow_nan and not np.isinf(arr).any()):
        arr2 = arr if arr.ndim == 2 else arr.reshape(len(arr), -1)
        raise ValueError(_describe_nonfinite(arr2))
    return arr


def check_n_components(n_components, n_samples, *, name="n_components"):
    """An integer number of components with ``1 <= n_components <= n_samples``."""
    if isinstance(n_components, bool) or not isinstance(n_components, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {n_components!r}.")
    if n_components < 1:
        raise ValueError(f"{name} must be >= 1, got {n_components}.")
    if n_samples < n_components:
        raise ValueError(
            f"Expected n_samples >= {name}, but got {name}={n_components} and "
            f"n_samples={n_samples}. Fit fewer components or pass more data."
        )
    return int(n_components)


def check_sample_weight(sample_weight, n_samples, dtype=np.float64):
    """Non-negative finite weights, not all zero; ``None`` means all ones."""
    if sample_weight is None:
        return np.ones(n_samples, dtype=dtype)
    if isinstance(sample_weight, numbers.Number):
        w = np.full(n_samples, float(sample_weight), dtype=dtype)
    else:
        w = check_finite_numeric(sample_weight, name="sample_weight").astype(dtype, copy=False)
        if w.ndim != 1 or w.shape[0] != n_samples:
            raise ValueError(
                f"sample_weight must be 1-D with one weight per sample ({n_samples},), got "
                f"shape {w.shape}."
            )
    if np.any(w < 0):
        raise ValueError(
            f"sample_weight has {int(np.sum(w < 0))} negative value(s); weights must be >= 0."
        )
    if not np.any(w > 0):
        raise ValueError(
            "sample_weight is zero for every sample, so there is nothing to fit; give at least "
            "one sample a positive weight."
        )
    return w


def column_extremes(X):
    """Each column's largest and smallest value (NaN where a column has NaN).

    numpy reduces a C-ordered (n, d) array over its rows with an inner loop of d elements;
    here the rows are reshaped to about 1024 elements wide first (4x faster for d = 32).
    """
    n, d = X.shape
    per_row = min(max(1, 1024 // max(d, 1)), max(n, 1))
    whole = n - n % per_row
    extremes = []
    for ufunc in (np.maximum, np.minimum):
        out = ufunc.reduce(X[:whole].reshape(whole // per_row, per_row * d), axis=0)
        out = ufunc.reduce(out.reshape(per_row, d), axis=0)
        if whole < n:
            out = ufunc(out, ufunc.reduce(X[whole:], axis=0))
        extremes.append(out)
    return tuple(extremes)


def warn_constant_columns(X, feature_names=None, stacklevel=3, extremes=None):
    """Warn about columns with zero variance: the fit stays usable but regularized.

    ``extremes``: :func:`column_extremes` of ``X``, if the caller has them.
    """
    if X.shape[0] < 2:
        return np.zeros(X.shape[1], dtype=bool)
    largest, smallest = column_extremes(X) if extremes is None else extremes
    constant = largest == smallest  # NaN compares unequal, as in X == X[:1]
    if constant.any():
        idx = np.flatnonzero(constant)
        names = [str(feature_names[i]) for i in idx] if feature_names is not None else idx.tolist()
        warnings.warn(
            f"Column(s) {names} of X are constant: their variance is zero, so the covariances "
            "are held positive only by regularization (reg_covar or the prior) and the "
            "likelihood is dominated by it. Drop constant columns before fitting.",
            DataWarning,
            stacklevel=stacklevel,
        )
    return constant


def check_int(value, name, minimum):
    """An integer (not a bool) at least ``minimum``; returns it as ``int``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def check_real(value, name, minimum):
    """A finite real number (not a bool) at least ``minimum``; returns it as ``float``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not np.isfinite(value)
        or value < minimum
    ):
        raise ValueError(f"{name} must be a finite number >= {minimum}, got {value!r}.")
    return float(value)


def check_probability(value, name, hint=""):
    """A real number (not a bool) strictly between 0 and 1; returns it as ``float``.

    ``hint`` (e.g. ``" (e.g. 0.8)"``) goes into the message right after the range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number strictly between 0 and 1{hint}, got {value!r}.")
    return float(value)
