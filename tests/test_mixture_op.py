"""The fused mixture total NUTS differentiates equals the plain expression it replaces:
value, gradient, Hessian-vector products, in one block or many, and in the model; the
compiled kernel of the same pass equals its JAX form."""

import os
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest

from bayes_gmm import _mixture_op
from bayes_gmm._mixture_op import (
    MixtureRows,
    MixtureTotal,
    fuse_mixture_sums,
    mixture_rows,
    row_features,
)
from bayes_gmm.model import build_model
from bayes_gmm.sampling import _jax_functions, _setup_jax


def _problem(n, K=3, d=3, seed=0):
    rng = np.random.default_rng(seed)
    coef = rng.normal(0.0, 0.3, (K, d * (d + 1) // 2 + d))
    offset = rng.normal(0.0, 1.0, K)
    xt = rng.normal(0.0, 1.0, (d, n))
    weights = rng.uniform(0.5, 2.0, n)
    return coef, offset, xt, weights


def _plain(coef, offset, xt, weights):
    import jax
    import jax.numpy as jnp

    log_dens = coef @ row_features(xt, jnp.concatenate) + offset[:, None]
    return jnp.sum(weights * jax.nn.logsumexp(log_dens, axis=0))


def _compiler_missing():
    return shutil.which(os.environ.get("CXX") or "g++") is None


# One block; several whole blocks; whole blocks and a remainder; each size above
# NATIVE_MIN_ROWS through the compiled kernel (where it builds) and through the JAX form.
_LARGE = (3 * _mixture_op.CHUNK_ROWS, 3 * _mixture_op.CHUNK_ROWS + 17)


@pytest.mark.parametrize(
    ("n", "native"), [(50, False)] + [(n, native) for n in _LARGE for native in (True, False)]
)
def test_fused_total_value_gradient_and_hessian(n, native, monkeypatch):
    import jax
    import jax.numpy as jnp

    if not native:
        monkeypatch.setattr(_mixture_op, "NATIVE_MIN_ROWS", sys.maxsize)
    _setup_jax()
    _mixture_op.register_jax()
    fused = _mixture_op._REGISTERED[0]
    coef, offset, xt, weights = _problem(n)

    def total(f, c, o):
        return f(c, o, xt, weights)

    for f in (fused, _plain):
        assert np.isfinite(float(total(f, coef, offset)))
    np.testing.assert_allclose(total(fused, coef, offset), total(_plain, coef, offset), rtol=1e-13)
    grads = [jax.grad(total, argnums=(1, 2))(f, coef, offset) for f in (fused, _plain)]
    for got, expected in zip(*grads, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
    # Forward over reverse, as the Laplace metric's Hessian-vector products.
    direction = (jnp.ones_like(coef) * 0.1, jnp.ones_like(offset))
    hvps = [
        jax.jvp(
            lambda c, o, f=f: jax.grad(total, argnums=(1, 2))(f, c, o), (coef, offset), direction
        )[1]
        for f in (fused, _plain)
    ]
    for got, expected in zip(*hvps, strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-9)


def _numpy_pass(coef, offset, xt, weights):
    features = row_features(xt, np.concatenate)
    log_dens = coef @ features + offset[:, None]
    top = log_dens.max(axis=0)
    scaled = np.exp(log_dens - top)
    norm = scaled.sum(axis=0)
    resp = scaled * (weights / norm)
    return (weights * (top + np.log(norm))).sum(), resp @ features.T, resp.sum(axis=1)


@pytest.mark.skipif(_compiler_missing(), reason="no C++ compiler: the JAX form is used")
@pytest.mark.parametrize(
    ("K", "d", "n"),
    # K around the kernel's register groups of 4; n below, at and around its 32-row tiles.
    [(1, 1, 5), (2, 2, 32), (3, 3, 33), (4, 5, 5000), (5, 5, 1001), (8, 4, 640), (9, 7, 777)],
)
def test_compiled_kernel_equals_the_pass(K, d, n):
    """Value and gradients of the compiled kernel against numpy's float64 pass, to rounding
    (its exp and log are its own polynomials, within a few ulp)."""
    import jax

    _setup_jax()
    native = _mixture_op._native_pass(None)
    assert native is not None, "a C++ compiler is installed, so the kernel must build"
    problem = _problem(n, K, d, seed=K)
    got = jax.jit(native)(*problem)
    for g, e in zip(got, _numpy_pass(*problem), strict=True):
        np.testing.assert_allclose(np.asarray(g), e, rtol=1e-13, atol=1e-13 * np.abs(e).max())


@pytest.mark.skipif(_compiler_missing(), reason="no C++ compiler: the JAX form is used")
def test_compiled_kernel_at_the_ends_of_exp_and_log():
    """Log densities 800 apart within a row (exp underflows to 0), responsibilities of
    exactly 1/K, and NaN or infinite coefficients propagate as in the plain expression."""
    import jax

    _setup_jax()
    native = jax.jit(_mixture_op._native_pass(None))
    n = 70
    xt = np.vstack([np.linspace(-800.0, 5.0, n), np.linspace(-3.0, 3.0, n)])
    # Features [x0^2, x0 x1, x1^2, x0, x1]: log densities x0, x1 and 0.
    coef = np.zeros((3, 5))
    coef[0, 3] = coef[1, 4] = 1.0
    offset, weights = np.zeros(3), np.ones(n)
    for c in (coef, np.zeros_like(coef)):
        for g, e in zip(
            native(c, offset, xt, weights),
            _numpy_pass(c, offset, xt, weights),
            strict=True,
        ):
            np.testing.assert_allclose(np.asarray(g), e, rtol=1e-14, atol=1e-14 * np.abs(e).max())
    for bad in (np.nan, np.inf):
        c = coef.copy()
        c[0, 3] = bad
        assert np.isnan(float(native(c, offset, xt, weights)[0]))


@pytest.mark.skipif(_compiler_missing(), reason="no C++ compiler: the JAX form is used")
def test_kernel_build_falls_back_to_the_jax_form(tmp_path):
    """A compiler that fails leaves the JAX form after one warning that says what to do;
    BAYES_GMM_NATIVE=0 leaves it silently. Fresh processes: the kernel is looked up once."""
    code = (
        "import warnings; warnings.simplefilter('error');\n"
        "from bayes_gmm._native import mixture_total_target\n"
        "try:\n    print(mixture_total_target())\n"
        "except RuntimeWarning as w:\n    print('warned:', w)\n"
    )
    base = dict(os.environ, BAYES_GMM_KERNEL_CACHE=str(tmp_path / "kernels"))
    runs = {
        "failing": dict(base, CXX=str(tmp_path / "no-such-compiler")),
        "off": dict(base, BAYES_GMM_NATIVE="0"),
    }
    out = {
        name: subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout
        for name, env in runs.items()
    }
    assert out["failing"].startswith("warned:") and "C++ compiler" in out["failing"]
    assert "BAYES_GMM_NATIVE=0" in out["failing"]
    assert out["off"].strip() == "None"
    assert not (tmp_path / "kernels").exists() or not any((tmp_path / "kernels").iterdir())


def test_fused_total_differentiates_the_data_too():
    """A model whose data depend on parameters still gets the right derivative."""
    import jax

    _setup_jax()
    _mixture_op.register_jax()
    fused = _mixture_op._REGISTERED[0]
    coef, offset, xt, weights = _problem(3 * _mixture_op.CHUNK_ROWS + 5)
    tangents = (np.full_like(xt, 0.01), np.full_like(weights, 0.1))
    got = jax.jvp(lambda x, w: fused(coef, offset, x, w), (xt, weights), tangents)
    expected = jax.jvp(lambda x, w: _plain(coef, offset, x, w), (xt, weights), tangents)
    np.testing.assert_allclose(got, expected, rtol=1e-11)


def test_pytensor_forms_agree():
    """MixtureRows is the plain expression; MixtureTotal's perform and gradient its sum."""
    coef, offset, xt, weights = _problem(200)
    features = row_features(xt, np.concatenate)
    inputs = [pt.as_tensor(v) for v in (coef, offset, xt, weights)]
    rows = mixture_rows(*inputs)
    plain = weights * np.log(np.exp(coef @ features + offset[:, None]).sum(axis=0))
    np.testing.assert_allclose(rows.eval(), plain, rtol=1e-12)
    total = MixtureTotal()(*inputs)
    np.testing.assert_allclose(total.eval(), plain.sum(), rtol=1e-12)
    grads = pytensor.grad(total, inputs[:2])
    expected = pytensor.grad(pt.sum(rows), inputs[:2])
    for g, e in zip(grads, expected, strict=True):
        np.testing.assert_allclose(g.eval(), e.eval(), rtol=1e-10)


def test_sampler_sums_the_rows_in_one_fused_node():
    """The model's log density holds MixtureRows; the sampler's holds MixtureTotal and no
    MixtureRows, and the JAX log density is the model's."""
    from pytensor.graph.traversal import ancestors

    _setup_jax()
    X = np.random.default_rng(0).normal(size=(60, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(X, 2, "full")

    def ops(graph):
        return [type(v.owner.op) for v in ancestors(graph) if v.owner is not None]

    before = ops([model.logp()])
    after = ops(fuse_mixture_sums([model.logp()]))
    assert MixtureRows in before and MixtureTotal not in before
    assert MixtureTotal in after and MixtureRows not in after
    prepare, logp, _, _ = _jax_functions(model)
    data = [np.asarray(v.get_value()) for v in sorted(model.data_vars, key=lambda v: v.name)]
    point = model.initial_point()
    values = [point[v.name] for v in model.value_vars]
    got = float(logp(*values, *prepare(*data))[0])
    np.testing.assert_allclose(got, model.compile_logp()(point), rtol=1e-12)


def test_sampler_fuses_the_blocks_of_rows_with_missing_values():
    """With missing values the rows' densities come in blocks (complete rows, frequent
    patterns, grouped rare ones) put back in order: the sampler's graph sums each
    MixtureRows block in a MixtureTotal (the complete rows, over 2,048 of them, through the
    compiled kernel where it builds), and its JAX log density is still the model's."""
    from pytensor.graph.traversal import ancestors

    _setup_jax()
    rng = np.random.default_rng(3)
    X = rng.normal(size=(4000, 3)) + np.array([0.0, 40.0, -7.0])
    X[rng.random(X.shape) < 0.15] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_model(X, 2, "full")

    def count(graph, op_type):
        return sum(isinstance(v.owner.op, op_type) for v in ancestors(graph) if v.owner)

    before = [model.logp()]
    after = fuse_mixture_sums(before)
    blocks = count(before, MixtureRows)
    assert blocks >= 2  # the complete rows and at least one frequent pattern
    assert count(after, MixtureTotal) == blocks and count(after, MixtureRows) == 0
    prepare, logp, _, _ = _jax_functions(model)
    data = [np.asarray(v.get_value()) for v in sorted(model.data_vars, key=lambda v: v.name)]
    prepared = prepare(*data)
    compiled = model.compile_logp(mode="FAST_COMPILE")  # two evaluations: no optimizing
    point = model.initial_point()
    for seed in range(2):
        values = [
            point[v.name] + 0.1 * seed * rng.normal(size=np.shape(point[v.name]))
            for v in model.value_vars
        ]
        expected = compiled(dict(zip([v.name for v in model.value_vars], values, strict=True)))
        np.testing.assert_allclose(float(logp(*values, *prepared)[0]), expected, rtol=1e-12)
