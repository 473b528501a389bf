"""NUTS on a PyMC model through JAX (numpyro), with the data as an argument.

Stage 2 of the Bayesian pipeline (model -> sampling -> relabel -> diagnostics ->
estimator). PyTensor turns the model's joint log density (on the unconstrained scale)
into a JAX function whose arguments are the free values *and* the model's ``pm.Data``
containers, and numpyro's NUTS runs it with ``jit_model_args=True``. So one compiled
sampler serves every data set and prior of the same shape: a refit on new data in the
same process does not compile again, and JAX's persistent compilation cache (on disk,
see :func:`jax_cache_dir`) makes a new process reuse it too.

``pm.sample(nuts_sampler="numpyro")`` would bake the data into the graph as constants
and compile again for every data set, and ``pm.sample``'s default sampler on the same
model is several times slower here (the README's speed table, from
``benchmarks/bench_nuts.py``, which runs both).

Chains run in parallel on the CPU cores: JAX is asked for one CPU device per core (at
least four) when it is first needed here (``jax_num_cpu_devices``, which only works before
JAX starts in the process), and switched to 64-bit floats (``jax_enable_x64``), as PyMC's
own JAX samplers do for float64 models.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

__all__ = ["NutsResult", "jax_cache_dir", "sample_nuts"]

_CACHE: dict = {}
_CACHE_LOCK = threading.Lock()
_SETUP: list = []

MASS_MATRICES = ("laplace", "adapt")
# Above this many free values a dense metric costs more per step (a matrix-vector
# product, and the Hessian's D gradients at the start) than it saves: "laplace" falls
# back to warm-up's diagonal adaptation there.
DENSE_LIMIT = 1000
# After warm-up each iteration's step size is the adapted one times a factor drawn
# uniformly in 1 +- STEP_JITTER. With a fixed metric and a fixed step size, NUTS on a
# near-Gaussian posterior runs trajectories of one length every time, and the draws of
# scale-like quantities can come out periodic (split R-hat of the variances above 1.01
# with a large ESS). The jitter breaks the period; Stan offers the same.
STEP_JITTER = 0.2
# XLA's CPU backend hands dot products and reductions to its YNNPACK library ("YNN
# fusions"); for the mixture's thin products over many rows (a (K, q) by (q, n) product
# and its gradient) inside NUTS' loops that was markedly slower per gradient on a million
# rows (bench_nuts.py's case C; no difference on 5,000 rows). Passed as compile options of the
# sampler only, so a jaxlib without the option compiles with its defaults instead.
XLA_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": ""}
# Warm-up's buffers (Stan's: step size only, first and last) around its one slow window,
# which adapts the dense metric when it has at least this many draws per free value.
_START_BUFFER, _END_BUFFER, _WINDOW_PER_VALUE = 75, 50, 5
# Entries of the largest data array up to which the Hessian's Hessian-vector products
# run all at once; above, in batches with about this many entries per product.
_HESSIAN_BATCH_ENTRIES = 40_000_000
# Outputs per batch of draws mapped to the constrained variables (and log-likelihoods).
_POST_BATCH_ENTRIES = 4_000_000


def jax_cache_dir():
    """Where JAX's compiled samplers are kept between processes.

    ``$BAYES_GMM_JAX_CACHE`` if set (an empty value turns the disk cache off), else
    ``$XDG_CACHE_HOME/bayes_gmm/jax`` or ``~/.cache/bayes_gmm/jax``.
    """
    env = os.environ.get("BAYES_GMM_JAX_CACHE")
    if env is not None:
        return Path(env) if env else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bayes_gmm" / "jax"


def _setup_jax():
    """Import JAX once, with one CPU device per core and the persistent cache on."""
    if _SETUP:
        return _SETUP[0]
    try:
        import jax
    except ImportError as exc:  # pragma: no cover - jax is a dependency
        raise ImportError(
            "BayesianGaussianMixture samples with JAX and numpyro: `pip install jax numpyro`."
        ) from exc
    try:
        jax.config.update("jax_num_cpu_devices", max(os.cpu_count() or 1, 4))
    except RuntimeError:
        pass  # JAX already started elsewhere in this process: keep its devices
    cache = jax_cache_dir()
    if cache is not None:
        try:
            cache.mkdir(parents=True, exist_ok=True)
            jax.config.update("jax_compilation_cache_dir", str(cache))
            jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
            jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)
        except OSError:
            pass  # an unwritable cache only costs compile time
    jax.config.update("jax_enable_x64", True)
    try:
        devices = jax.devices("cpu")
    except RuntimeError as exc:
        raise RuntimeError(
            f"JAX could not start on the CPU ({exc}). Check the jax / jaxlib install "
            "(`pip install -U jax`)."
        ) from exc
    with warnings.catch_warnings():
        # numpyro imports tqdm.auto, which warns "IProgress not found" in a Jupyter kernel
        # without ipywidgets: noise in every notebook, as our optional bar is plain tqdm.
        warnings.filterwarnings("ignore", message="IProgress not found")
        import numpyro  # noqa: F401
    _SETUP.append(len(devices))
    return _SETUP[0]


def _data_inputs(model):
    """The model's ``pm.Data`` containers, in a fixed order."""
    return sorted(model.data_vars, key=lambda v: v.name)


def _data_only_inputs(outputs, placeholders):
    """The largest subgraphs of ``outputs`` that depend on the data alone.

    Returns the variables where such a subgraph feeds the rest of the graph (the data
    containers themselves where they are used directly). The sampler computes them once
    per run instead of once per gradient: for the mixture this turns the rows into the
    features its log density is linear in (see ``mixture_density.mixture_log_density``), and it
    does the same for whatever data transformation a user's model adds.
    """
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import ancestors, io_toposort

    nodes = io_toposort([v for v in ancestors(outputs) if v.owner is None], outputs)
    data = set(placeholders)
    for node in nodes:
        # Subgraphs of constants alone stay: PyTensor folds them itself.
        if any(i in data for i in node.inputs) and all(
            i in data or isinstance(i, Constant) for i in node.inputs
        ):
            data.update(node.outputs)
    boundary = []
    for node in nodes:
        if node.outputs[0] in data:
            continue
        boundary.extend(i for i in node.inputs if i in data and i not in boundary)
    boundary.extend(o for o in outputs if o in data and o not in boundary)
    return boundary


def _jax_functions(model, log_likelihood=False, logp=None):
    """JAX functions of the model with the data as arguments.

    ``logp`` is ``model.logp()`` where the caller has built it already (PyMC builds the
    log density anew on every call, a noticeable part of a first fit).

    Returns ``prepare(*data)`` (the data-only parts of the log density, computed once
    per run), ``logp(*values, *prepared)`` and ``post(*values, *data)`` (the
    constrained free variables and Deterministics, then, with ``log_likelihood``, each
    observed variable's pointwise log density), and the names of ``post``'s outputs.
    """
    import jax
    from pymc.sampling.jax import get_jaxified_graph
    from pymc.util import get_default_varnames
    from pytensor.graph.replace import clone_replace

    from bayes_gmm._mixture_op import fuse_mixture_sums, register_jax

    register_jax()
    data = _data_inputs(model)
    placeholders = [v.type() for v in data]
    replace = dict(zip(data, placeholders, strict=True))
    logp = model.logp() if logp is None else logp
    logp = fuse_mixture_sums(clone_replace([logp], replace=replace))
    prepared = _data_only_inputs(logp, placeholders)
    prepare_fn = get_jaxified_graph(inputs=placeholders, outputs=prepared)
    slots = [v.type() for v in prepared]
    logp = clone_replace(logp, replace=dict(zip(prepared, slots, strict=True)))
    logp_fn = get_jaxified_graph(inputs=[*model.value_vars, *slots], outputs=logp)
    # The constrained free variables and the Deterministics, not the transformed values.
    wanted = get_default_varnames(model.unobserved_value_vars, include_transformed=False)
    names = [v.name for v in wanted]
    if log_likelihood:
        wanted = [*wanted, *model.logp(vars=model.observed_RVs, sum=False)]
        names += [rv.name for rv in model.observed_RVs]
    outputs = clone_replace(wanted, replace=replace)
    post_fn = get_jaxified_graph(inputs=[*model.value_vars, *placeholders], outputs=outputs)
    # Under jit, the sampler's program traces each function once: the Laplace metric's
    # Hessian, NUTS' gradient and step-size search then transform the one traced form
    # instead of tracing PyTensor's generated code again. Inline: no call boundary in
    # the compiled program, which keeps XLA's fusions as they were.
    return (*(jax.jit(f, inline=True) for f in (prepare_fn, logp_fn, post_fn)), names)


def _laplace_inverse_mass(potential, start, scale, batch_size):
    """The inverse of the potential's Hessian at ``start``, flattened as numpyro does.

    Near the mode of a well-identified posterior that is the Laplace approximation's
    covariance: a dense metric that takes the posterior's correlations (between a
    component's mean and its precision, say) out of the sampler's way, so NUTS needs far
    fewer steps per draw than with a diagonal metric learnt during warm-up. Eigenvalues
    are taken in absolute value (a start off the mode may see negative curvature) and
    floored; a Hessian that is not finite falls back to the diagonal ``scale**2``.
    """
    import jax
    import jax.numpy as jnp
    from jax.flatten_util import ravel_pytree

    flat, unravel = ravel_pytree(start)
    grad = jax.grad(lambda f: potential(unravel(f)))

    def hvp(v):
        return jax.jvp(grad, (flat,), (v,))[1]

    hessian = jax.lax.map(hvp, jnp.eye(flat.shape[0], dtype=flat.dtype), batch_size=batch_size)
    eigval, eigvec = jnp.linalg.eigh(0.5 * (hessian + hessian.T))
    eigval = jnp.abs(eigval)
    eigval = jnp.maximum(eigval, 1e-10 * jnp.max(eigval))
    inverse = (eigvec / eigval) @ eigvec.T
    diagonal = jnp.diag(ravel_pytree(scale)[0] ** 2)
    return jnp.where(jnp.all(jnp.isfinite(inverse)), inverse, diagonal)


def _compile(function, args):
    """``function`` (a ``jax.jit`` or ``jax.pmap``) compiled for ``args`` with
    ``XLA_OPTIONS``, or with XLA's defaults where this jaxlib does not know them."""
    from jax.errors import JaxRuntimeError

    lowered = function.lower(*args)
    try:
        return lowered.compile(compiler_options=XLA_OPTIONS)
    except JaxRuntimeError as exc:
        if "option" not in str(exc):
            raise
        return lowered.compile()


@contextlib.contextmanager
def _one_slow_window():
    """numpyro's warm-up with a single slow window between Stan's buffers.

    Stan's schedule (and numpyro's) re-estimates the metric at the end of windows of 25,
    50, 100, ... draws; a dense estimate from the first ones, in dozens of dimensions, is
    noise, and replaced a good starting metric (the Laplace one) with a worse one (nearly
    twice the gradients on the 5-D benchmark case). One window over the middle of warm-up
    keeps the Laplace metric until enough draws estimate the posterior's own covariance,
    which is better where the posterior is not Gaussian (overlapping components: iris,
    tied, K=3). numpyro has no argument for a schedule: its builder is swapped while
    ``init_kernel`` reads it (under the sampler lock), or left alone if it moved.
    """
    from numpyro.infer import hmc_util

    builder = getattr(hmc_util, "build_adaptation_schedule", None)
    window = getattr(hmc_util, "AdaptWindow", None)
    if builder is None or window is None:
        yield
        return

    def schedule(num_steps):
        end = num_steps - _END_BUFFER
        return [
            window(0, _START_BUFFER - 1),
            window(_START_BUFFER, end - 1),
            window(end, num_steps - 1),
        ]

    hmc_util.build_adaptation_schedule = schedule
    try:
        yield
    finally:
        hmc_util.build_adaptation_schedule = builder


def _with_step_size(state, step_size):
    return state._replace(adapt_state=state.adapt_state._replace(step_size=step_size))


def _structure_key(model, shapes, logp):
    """What fixes the compiled sampler: the log density's graph ``logp`` (the model's
    ``model.logp()``) and every input's shape.

    The graph is compared by its printed form (data containers by name, constants by
    value), so a model a user changed never reuses the sampler of another.
    """
    from pytensor.printing import debugprint

    graph = debugprint(logp, file="str", print_type=True)
    data = tuple((v.name, tuple(v.get_value(borrow=True).shape)) for v in _data_inputs(model))
    return (graph, tuple(sorted(shapes.items())), data)


class _Sampler:
    """NUTS chains over one model structure, compiled once, reused for new data.

    numpyro's ``MCMC`` class with ``chain_method="parallel"`` binds the model's arguments
    into the function it maps over the devices, so XLA sees the data as constants and
    compiles again for every data set. Here the chains are written with numpyro's
    functional NUTS (``numpyro.infer.hmc.hmc``): warm-up, draws and the map to the
    constrained variables are one function of (key, start, data), mapped over the chains
    with ``jax.pmap`` (parallel) or ``lax.map`` (sequential), so its compiled form depends
    on shapes only and JAX's persistent cache can serve it to a new process.
    """

    def __init__(
        self,
        model,
        shapes,
        draws,
        tune,
        chains,
        target_accept,
        parallel,
        progressbar,
        mass_matrix,
        log_likelihood,
        logp=None,
    ):
        import jax
        import jax.numpy as jnp
        from jax import lax
        from jax.flatten_util import ravel_pytree
        from numpyro.infer.hmc import hmc

        prepare_fn, logp_fn, post_fn, names = _jax_functions(model, log_likelihood, logp)
        self.value_names = value_names = [v.name for v in model.value_vars]
        self.names = names
        self.n_observed = len(model.observed_RVs) if log_likelihood else 0
        self.chain_method = "parallel" if parallel and chains > 1 else "sequential"
        progress = _Progress(chains * (draws + tune)) if progressbar else None
        every = max((draws + tune) // 100, 1)

        def potential_gen(*data):
            return lambda z: -logp_fn(*(z[n] for n in value_names), *data)[0]

        init_kernel, sample_kernel = hmc(potential_fn_gen=potential_gen, algo="NUTS")

        def step(state, data):
            state = sample_kernel(state, model_args=data)
            if progress is not None:
                lax.cond(
                    state.i % every == 0,
                    lambda: jax.debug.callback(progress.update, every),
                    lambda: None,
                )
            return state

        n_values = sum(int(np.prod(shape)) for shape in shapes.values())
        dense = mass_matrix == "laplace" and n_values <= DENSE_LIMIT
        # One slow window of warm-up, long enough to estimate a dense covariance.
        window = tune - _START_BUFFER - _END_BUFFER
        adapt_dense = dense and window >= max(_WINDOW_PER_VALUE * n_values, 100)

        def chain(key, start, scale, data):
            key, jitter_key = jax.random.split(key)
            prepared = tuple(prepare_fn(*data) or ())  # None when nothing is data-only
            if dense:
                largest = max((int(np.size(p)) for p in prepared), default=1)
                batch = max(1, _HESSIAN_BATCH_ENTRIES // max(largest, 1))
                inverse = _laplace_inverse_mass(
                    potential_gen(*prepared), start, scale, min(batch, n_values)
                )
                metric = {
                    "inverse_mass_matrix": inverse,
                    "dense_mass": True,
                    "adapt_mass_matrix": adapt_dense,
                    # numpyro's regularization shrinks towards 1e-3 I, larger than the
                    # posterior variances of a million rows' means; the window is long
                    # enough for the plain estimate (_WINDOW_PER_VALUE).
                    "regularize_mass_matrix": False,
                }
            else:
                metric = {"inverse_mass_matrix": ravel_pytree(scale)[0] ** 2}
            with _one_slow_window() if adapt_dense else contextlib.nullcontext():
                state = init_kernel(
                    start,
                    num_warmup=tune,
                    target_accept_prob=target_accept,
                    model_args=prepared,
                    rng_key=key,
                    **metric,
                )

            # Warm-up and draws in one scan: one copy of the NUTS step in the compiled
            # program (two loops compiled it twice). Warm-up iterations are recorded
            # too and dropped below: a few numbers per iteration.
            def iterate(state, _):
                adapted = state.adapt_state.step_size
                drawing = state.i >= tune
                u = jax.random.uniform(jax.random.fold_in(jitter_key, state.i), (), minval=-1.0)
                used = jnp.where(drawing, adapted * (1.0 + STEP_JITTER * u), adapted)
                state = step(_with_step_size(state, used), prepared)
                # Warm-up's adaptation moves the step size; a draw's jitter does not stay.
                state = _with_step_size(
                    state, jnp.where(drawing, adapted, state.adapt_state.step_size)
                )
                fields = (
                    state.num_steps,
                    state.potential_energy,
                    state.energy,
                    used,
                    state.accept_prob,
                    state.diverging,
                )
                return state, ([state.z[n] for n in value_names], fields)

            _, (values, fields) = lax.scan(iterate, state, None, length=tune + draws)
            tune_steps = jax.numpy.sum(fields[0][:tune])
            values = [v[tune:] for v in values]
            fields = tuple(f[tune:] for f in fields)
            # Draws in batches: the pointwise log-likelihood is (rows x components) per draw.
            per_draw = jax.eval_shape(lambda v: post_fn(*v, *data), [v[0] for v in values])
            entries = max(sum(int(np.prod(o.shape)) for o in per_draw), 1)
            batch = int(min(max(_POST_BATCH_ENTRIES // entries, 1), draws))
            outputs = lax.map(lambda v: post_fn(*v, *data), values, batch_size=batch)
            return outputs, fields, tune_steps

        self._compiled = None
        if self.chain_method == "parallel":
            self._run = jax.pmap(chain, in_axes=(0, 0, None, None))
        else:
            self._run = jax.jit(
                lambda keys, starts, scale, data: lax.map(
                    lambda a: chain(*a, scale, data), (keys, starts)
                )
            )
        self._progress = progress

    def run(self, data, start, scale, seed):
        import jax

        keys = jax.random.split(jax.random.PRNGKey(seed), len(next(iter(start.values()))))
        if self._progress is not None:
            self._progress.open()
        try:
            args = (keys, start, scale, tuple(data))
            if self._compiled is None:
                self._compiled = _compile(self._run, args)
            outputs, fields, tune_steps = self._compiled(*args)
            outputs, fields, tune_steps = jax.device_get((outputs, fields, tune_steps))
        finally:
            if self._progress is not None:
                self._progress.close()
        posterior = {n: np.asarray(o) for n, o in zip(self.names, outputs, strict=True)}
        observed = self.names[len(self.names) - self.n_observed :]
        log_likelihood = {n: posterior.pop(n) for n in observed}
        steps, potential, energy, step_size, accept, diverging = (np.asarray(f) for f in fields)
        stats = {
            "diverging": diverging,
            "energy": energy,
            "lp": -potential,
            "step_size": step_size,
            "acceptance_rate": accept,
            "n_steps": steps,
            "tree_depth": (np.log2(np.maximum(steps, 1)).astype(int) + 1),
        }
        return posterior, stats, np.asarray(tune_steps), log_likelihood


class _Progress:
    """A tqdm bar the compiled chains advance through ``jax.debug.callback``."""

    def __init__(self, total):
        self.total = total
        self.bar = None

    def open(self):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, desc="NUTS", unit="step")

    def update(self, n):
        if self.bar is not None:
            self.bar.update(int(n))

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class NutsResult(NamedTuple):
    """What :func:`sample_nuts` returns.

    Attributes
    ----------
    posterior : dict of str -> ndarray
        Every free variable (constrained) and Deterministic, shaped (chain, draw, ...).
    sample_stats : dict of str -> ndarray
        ``diverging``, ``energy``, ``lp``, ``step_size``, ``acceptance_rate``,
        ``n_steps``, ``tree_depth``, shaped (chain, draw).
    timings : dict
        Seconds to set up the compiled sampler ("compile", 0 when reused) and to sample
        ("sample", which includes JAX's compile on the sampler's first run), and
        "gradients": the log-density gradients evaluated, warm-up included.
    log_likelihood : dict of str -> ndarray
        Each observed variable's pointwise log density, shaped (chain, draw) followed
        by its own shape; empty unless asked for (``log_likelihood=True``).
    """

    posterior: dict
    sample_stats: dict
    timings: dict
    log_likelihood: dict


def sample_nuts(
    model,
    start,
    *,
    draws=1000,
    tune=1000,
    chains=4,
    target_accept=0.8,
    random_seed=0,
    progressbar=False,
    parallel=True,
    scale=None,
    mass_matrix="laplace",
    log_likelihood=False,
):
    """Sample a PyMC model with numpyro's NUTS, the data as arguments of one compiled sampler.

    Parameters
    ----------
    model : pymc.Model
        Every free variable continuous; its ``pm.Data`` containers hold the data.
    start : dict of str -> ndarray
        Each chain's start on the unconstrained scale, keyed by value-variable name,
        with a leading chain axis of length ``chains``.
    draws, tune, chains : int
    target_accept : float
    random_seed : int
    progressbar : bool
    parallel : bool, default=True
        Run the chains at once, one JAX CPU device each (when there are enough devices),
        instead of one after the other.
    scale : dict of str -> ndarray, default=None
        Approximate posterior sds on the unconstrained scale, keyed and shaped like one
        chain's start (1 where missing): the diagonal mass matrix warm-up begins with
        (``mass_matrix="adapt"``), or the fallback of a Hessian that is not finite.
    mass_matrix : {"laplace", "adapt"}, default="laplace"
        "laplace": a dense metric, the inverse Hessian of the log density at each
        chain's start, which warm-up replaces once, with the draws' covariance over one
        slow window (:func:`_one_slow_window`), when ``tune`` leaves at least
        ``_WINDOW_PER_VALUE`` draws per free value there (else it keeps it and tunes the
        step size only); for models of at most ``DENSE_LIMIT`` free values, else "adapt". "adapt": a
        diagonal metric learnt during warm-up (numpyro's default windows), starting
        from ``scale``.
    log_likelihood : bool, default=False
        Also compute each observed variable's pointwise log density at every draw, in
        the compiled sampler (as ``pm.compute_log_likelihood`` would): the result's
        ``log_likelihood``.

    Returns
    -------
    NutsResult
        ``(posterior, sample_stats, timings, log_likelihood)``, the same four fields
        whatever the arguments.
    """
    if mass_matrix not in MASS_MATRICES:
        raise ValueError(f"mass_matrix must be one of {MASS_MATRICES}, got {mass_matrix!r}.")
    n_devices = _setup_jax()
    t0 = time.perf_counter()
    missing = {v.name for v in model.value_vars} - set(start)
    if missing:
        raise ValueError(f"start lacks the model's free values {sorted(missing)}.")
    shapes = {n: tuple(np.shape(start[n])[1:]) for n in (v.name for v in model.value_vars)}
    parallel = bool(parallel) and 1 < int(chains) <= n_devices
    settings = (
        int(draws),
        int(tune),
        int(chains),
        float(target_accept),
        parallel,
        bool(progressbar),
        mass_matrix,
        bool(log_likelihood),
    )
    logp = model.logp()
    key = (_structure_key(model, shapes, logp), settings)
    with _CACHE_LOCK:
        sampler = _CACHE.get(key)
        if sampler is None:
            sampler = _Sampler(model, shapes, *settings, logp=logp)
            _CACHE[key] = sampler
        t1 = time.perf_counter()
        data = [np.asarray(v.get_value(borrow=True)) for v in _data_inputs(model)]
        start = {n: np.asarray(start[n], dtype=float) for n in sampler.value_names}
        scale = scale or {}
        scale = {
            n: np.broadcast_to(np.asarray(scale.get(n, 1.0), dtype=float), shapes[n])
            for n in sampler.value_names
        }
        posterior, stats, tune_steps, pointwise = sampler.run(data, start, scale, int(random_seed))
    timings = {
        "compile": t1 - t0,
        "sample": time.perf_counter() - t1,
        "gradients": int(tune_steps.sum() + stats["n_steps"].sum()),
    }
    return NutsResult(posterior, stats, timings, pointwise)
