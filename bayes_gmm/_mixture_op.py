"""The mixture's summed log-likelihood as one operation, fused for NUTS.

The observed variable's log density (:func:`bayes_gmm.mixture_density.mixture_log_density`)
is, per row ``n``, ``w_n logsumexp_k (C F + o)_kn``: a thin matrix product of the
components' coefficients ``C`` (K, q) with the rows' features ``F`` (q, n)
(:func:`row_features`: the products ``x_i x_j``, ``i <= j``, then ``x``, of the rows'
coordinates ``xt`` (d, n)), then a log-sum-exp over the components. Written as separate
array operations, a gradient reads ``F`` twice (the product, then its transpose for the
coefficients' gradient) and materializes (K, n) arrays in between. At a million rows that
is most of the sampler's time.

Here the rows' log densities are one node, :class:`MixtureRows` (an inline
``OpFromGraph`` of the plain expression, so every PyTensor backend, PyMC's log-likelihood
and PyTensor's gradient see ordinary operations). The sampler (:mod:`bayes_gmm.sampling`)
replaces the sum of that node by :class:`MixtureTotal`, whose JAX form computes the value
and the gradient with respect to ``C`` and ``o`` in one pass over the rows, in blocks
that stay in cache, each making its rows' features. From
:data:`NATIVE_MIN_ROWS` rows that pass is the compiled CPU kernel of :mod:`bayes_gmm._native`
(an XLA custom call, faster than XLA's own code for these thin products: see the README's
speed table) wherever a C++ compiler can build it, and the JAX form elsewhere. The
gradient is returned through a ``custom_jvp`` rule, so reverse mode (NUTS) and
forward-over-reverse (the Laplace metric's Hessian-vector products) both work.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
from pytensor.compile.builders import OpFromGraph
from pytensor.graph.basic import Apply
from pytensor.graph.op import Op
from pytensor.graph.replace import clone_replace
from pytensor.graph.traversal import ancestors, io_toposort
from pytensor.tensor.basic import Join
from pytensor.tensor.math import Sum

__all__ = [
    "MixtureRows",
    "MixtureTotal",
    "ScatterRows",
    "fuse_mixture_sums",
    "mixture_rows",
    "register_jax",
    "row_features",
    "scatter_rows",
]

# Rows per block of the fused pass: the block's features (q x CHUNK_ROWS doubles) and its
# (K x CHUNK_ROWS) densities stay in the core's cache between the two products.
CHUNK_ROWS = 4096
# From this many rows the pass runs in the compiled kernel (bayes_gmm._native) where it
# can be built. Below, a gradient costs microseconds either way, and a first fit on a new
# machine would wait for the kernel's build (seconds, once per machine) for nothing.
NATIVE_MIN_ROWS = 2048


def row_features(xt, concatenate):
    """The rows' features ``[x_i x_j (i <= j), x]``, in the order of the model's coefficients.

    Parameters
    ----------
    xt : array or tensor of shape (d, n), d static
        The rows' coordinates, one row of ``xt`` per coordinate.
    concatenate : callable
        numpy's, JAX's or PyTensor's ``concatenate``.

    Returns
    -------
    array or tensor of shape (d (d + 1) / 2 + d, n)
    """
    rows, cols = np.triu_indices(_static_dim(xt))
    return concatenate([xt[rows] * xt[cols], xt], axis=0)


def _static_dim(xt):
    d = (xt.type.shape if isinstance(xt, pt.TensorVariable) else xt.shape)[0]
    if d is None:
        raise ValueError("row_features needs the static number of coordinates.")
    return int(d)


def _rows_expression(coef, offset, xt, sample_weight):
    features = row_features(xt, pt.concatenate)
    return sample_weight * pt.logsumexp(pt.dot(coef, features) + offset[:, None], axis=0)


class MixtureRows(OpFromGraph):
    """``w_n logsumexp_k (C F + o)_kn`` for each row: see the module docstring."""


def mixture_rows(coef, offset, xt, sample_weight):
    """Each row's weighted log mixture density, as one :class:`MixtureRows` node.

    Parameters
    ----------
    coef : tensor of shape (K, q)
        Each component's coefficients on the features (:func:`row_features`).
    offset : tensor of shape (K,)
        Each component's constant term (log weight included).
    xt : tensor of shape (d, n), d static
        The rows' coordinates (centred), one row of ``xt`` per coordinate.
    sample_weight : tensor of shape (n,)

    Returns
    -------
    tensor of shape (n,)
    """
    inputs = [v.type() for v in (coef, offset, xt, sample_weight)]
    op = MixtureRows(inputs, [_rows_expression(*inputs)], inline=True)
    return op(coef, offset, xt, sample_weight)


class MixtureTotal(Op):
    """``sum_n w_n logsumexp_k (C F + o)_kn``; fused in its JAX form (:func:`register_jax`)."""

    __props__ = ()

    def make_node(self, coef, offset, xt, sample_weight):
        inputs = [pt.as_tensor_variable(v) for v in (coef, offset, xt, sample_weight)]
        return Apply(self, inputs, [pt.dscalar()])

    def perform(self, node, inputs, output_storage):
        coef, offset, xt, sample_weight = inputs
        log_dens = coef @ row_features(xt, np.concatenate) + offset[:, None]
        top = log_dens.max(axis=0)
        lse = top + np.log(np.exp(log_dens - top).sum(axis=0))
        output_storage[0][0] = np.asarray(np.dot(sample_weight, lse), dtype=float)

    def pullback(self, inputs, outputs, cotangents):
        total = pt.sum(_rows_expression(*inputs))
        return [cotangents[0] * g for g in pytensor.grad(total, inputs)]


class ScatterRows(OpFromGraph):
    """``out[order] = values``, ``order`` a permutation of the rows: see :func:`scatter_rows`."""


def scatter_rows(values, order):
    """The rows' values, computed block by block in ``order``, put back in the data's order.

    One :class:`ScatterRows` node (an inline ``OpFromGraph`` of ``set_subtensor``), so that
    :func:`fuse_mixture_sums` can see that the sum over the rows is the sum of the blocks.

    Parameters
    ----------
    values : tensor of shape (n,)
        The rows' values in the order ``order`` lists them.
    order : tensor of shape (n,), int
        A permutation of ``0 .. n - 1``: ``values[i]`` belongs to row ``order[i]``.

    Returns
    -------
    tensor of shape (n,)
    """
    inputs = [values.type(), order.type()]
    out = pt.set_subtensor(pt.zeros_like(inputs[0])[inputs[1]], inputs[0])
    return ScatterRows(inputs, [out], inline=True)(values, order)


def _fused_sum(v):
    """A scalar equal to ``sum(v)`` with the sums of :class:`MixtureRows` nodes in it fused
    (through a :class:`ScatterRows` and a concatenation of blocks), or ``None`` if ``v``
    holds none."""
    owner = v.owner
    if owner is None:
        return None
    if isinstance(owner.op, MixtureRows):
        return MixtureTotal()(*owner.inputs)
    if isinstance(owner.op, ScatterRows):  # a permutation: the same sum
        return _fused_sum(owner.inputs[0])
    if isinstance(owner.op, Join) and v.ndim == 1:
        # The blocks (an older Join also takes its axis as a scalar input).
        parts = [(_fused_sum(p), p) for p in owner.inputs if p.ndim == 1]
        if all(fused is None for fused, _ in parts):
            return None
        return sum(pt.sum(p) if fused is None else fused for fused, p in parts)
    return None


def fuse_mixture_sums(outputs):
    """``outputs`` with each full sum of a :class:`MixtureRows` node one :class:`MixtureTotal`
    (also where the rows' densities come in blocks put back in order by :func:`scatter_rows`,
    as for data with missing values)."""
    replace = {}
    for node in io_toposort([v for v in ancestors(outputs) if v.owner is None], outputs):
        if not (isinstance(node.op, Sum) and node.op.axis in (None, (0,))):
            continue
        total = _fused_sum(node.inputs[0])
        if total is not None:
            replace[node.outputs[0]] = total.astype(node.outputs[0].dtype)
    return clone_replace(outputs, replace=replace) if replace else outputs


def _jax_total():
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.custom_derivatives import SymbolicZero

    def block(coef, offset, features, sample_weight):
        log_dens = coef @ features + offset[:, None]
        top = jnp.max(log_dens, axis=0)
        scaled = jnp.exp(log_dens - top)
        norm = jnp.sum(scaled, axis=0)
        resp = scaled * (sample_weight / norm)  # responsibilities times the row weights
        value = jnp.sum(sample_weight * (top + jnp.log(norm)))
        return value, resp @ features.T, jnp.sum(resp, axis=1)

    def value_and_gradients(coef, offset, xt, sample_weight):
        n = xt.shape[1]
        if n <= 2 * CHUNK_ROWS:
            # One block: its features at once. Inside NUTS they depend on the data alone,
            # and XLA computes such loop invariants once per run, not once per gradient.
            return block(coef, offset, row_features(xt, jnp.concatenate), sample_weight)
        whole = n // CHUNK_ROWS

        # More rows: each block makes its own features, so that memory stays bounded
        # (all rows' features, and their tangents in the Laplace metric's Hessian, would
        # hold q / d times the data, per chain).
        def body(i, acc):
            start = i * CHUNK_ROWS
            rows = lax.dynamic_slice_in_dim(xt, start, CHUNK_ROWS, axis=1)
            weights = lax.dynamic_slice_in_dim(sample_weight, start, CHUNK_ROWS)
            features = row_features(rows, jnp.concatenate)
            return tuple(
                a + b for a, b in zip(acc, block(coef, offset, features, weights), strict=True)
            )

        zero = (jnp.zeros((), coef.dtype), jnp.zeros_like(coef), jnp.zeros_like(offset))
        acc = lax.fori_loop(0, whole, body, zero)
        if n % CHUNK_ROWS:
            tail = whole * CHUNK_ROWS
            rest = block(
                coef, offset, row_features(xt[:, tail:], jnp.concatenate), sample_weight[tail:]
            )
            acc = tuple(a + b for a, b in zip(acc, rest, strict=True))
        return acc

    native = []  # the compiled pass, looked up on the first trace that wants it

    def fused_pass(coef, offset, xt, sample_weight):
        # The kernel is a CPU custom call for float64 data.
        if (
            xt.shape[1] >= NATIVE_MIN_ROWS
            and jax.default_backend() == "cpu"
            and all(v.dtype == jnp.float64 for v in (coef, offset, xt, sample_weight))
        ):
            if not native:
                native.append(_native_pass(value_and_gradients))
            if native[0] is not None:
                return native[0](coef, offset, xt, sample_weight)
        return value_and_gradients(coef, offset, xt, sample_weight)

    def plain(coef, offset, xt, sample_weight):
        log_dens = coef @ row_features(xt, jnp.concatenate) + offset[:, None]
        return jnp.sum(sample_weight * jax.nn.logsumexp(log_dens, axis=0))

    @jax.custom_jvp
    def mixture_total(coef, offset, xt, sample_weight):
        return fused_pass(coef, offset, xt, sample_weight)[0]

    def tangent_of(primals, tangents):
        coef, offset, xt, sample_weight = primals
        t_coef, t_offset, t_xt, t_weight = tangents
        value, d_coef, d_offset = fused_pass(*primals)
        out = jnp.zeros_like(value)
        if not isinstance(t_coef, SymbolicZero):
            out = out + jnp.sum(d_coef * t_coef)
        if not isinstance(t_offset, SymbolicZero):
            out = out + jnp.dot(d_offset, t_offset)
        if not (isinstance(t_xt, SymbolicZero) and isinstance(t_weight, SymbolicZero)):
            # Only a model that makes the data depend on parameters gets here: a second
            # pass over the rows, by the plain expression.
            def data_part(x, w):
                return plain(coef, offset, x, w)

            if isinstance(t_xt, SymbolicZero):
                t_xt = jnp.zeros_like(xt)
            if isinstance(t_weight, SymbolicZero):
                t_weight = jnp.zeros_like(sample_weight)
            out = out + jax.jvp(data_part, (xt, sample_weight), (t_xt, t_weight))[1]
        return value, out

    mixture_total.defjvp(tangent_of, symbolic_zeros=True)
    return mixture_total


def _native_pass(jax_form):
    """The fused pass as the compiled kernel's XLA custom call, or ``None`` where the
    kernel cannot be built. Its derivative (only the Laplace metric's Hessian-vector
    products take one) is that of ``jax_form``, the same pass written in JAX."""
    import jax

    from bayes_gmm._native import mixture_total_target

    target = mixture_total_target()
    if target is None:
        return None

    @jax.custom_jvp
    def native(coef, offset, xt, sample_weight):
        shapes = (
            jax.ShapeDtypeStruct((), coef.dtype),
            jax.ShapeDtypeStruct(coef.shape, coef.dtype),
            jax.ShapeDtypeStruct(offset.shape, offset.dtype),
        )
        call = jax.ffi.ffi_call(target, shapes, vmap_method="sequential")
        return tuple(call(coef, offset, xt, sample_weight))

    native.defjvp(lambda primals, tangents: jax.jvp(jax_form, primals, tangents))
    return native


def register_jax():
    """Give :class:`MixtureTotal` its fused JAX form (idempotent; imports JAX)."""
    if _REGISTERED:
        return
    from pytensor.link.jax.dispatch import jax_funcify

    total = _jax_total()

    @jax_funcify.register(MixtureTotal)
    def _funcify(op, **kwargs):
        return total

    _REGISTERED.append(total)


_REGISTERED = []
