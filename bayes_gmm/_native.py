"""The compiled CPU kernel of the fused mixture sum, built at first use.

``_mixture_kernel.cc`` (shipped with the package) is compiled with the system's C++
compiler, as PyTensor compiles its C backend, into a per-user cache, then registered with
XLA as an FFI target. Where it cannot be built (no compiler, no XLA FFI headers in this
jaxlib, a failed build), :func:`mixture_total_target` returns ``None`` after one warning,
and the sampler keeps the JAX form of the same pass (``bayes_gmm._mixture_op``).

Set ``BAYES_GMM_NATIVE=0`` to leave the kernel out, ``$CXX`` to choose the compiler and
``$BAYES_GMM_KERNEL_CACHE`` for where the built library is kept.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import subprocess
import tempfile
import threading
import warnings
from pathlib import Path

__all__ = ["kernel_cache_dir", "mixture_total_target"]

TARGET = "bayes_gmm_mixture_total"
SOURCE = Path(__file__).with_name("_mixture_kernel.cc")
# No -ffast-math: it would let the compiler assume that no value is infinite or NaN, which
# NUTS meets in a divergent trajectory. The kernel's vectors are written out, so the
# compiler need not reassociate anything; fused multiply-adds change results at rounding
# level only.
FLAGS = ("-O3", "-march=native", "-std=c++17", "-shared", "-fPIC", "-ffp-contract=fast")
_STATE: dict = {}
_LOCK = threading.Lock()


def kernel_cache_dir():
    """Where built kernels are kept: ``$BAYES_GMM_KERNEL_CACHE``, else
    ``$XDG_CACHE_HOME/bayes_gmm/kernels`` or ``~/.cache/bayes_gmm/kernels``."""
    env = os.environ.get("BAYES_GMM_KERNEL_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bayes_gmm" / "kernels"


def _cpu_signature():
    """What -march=native compiles for: the library is kept per CPU type."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _build(include_dir):
    compiler = os.environ.get("CXX") or "g++"
    source = SOURCE.read_bytes()
    parts = (compiler, " ".join(FLAGS), _cpu_signature(), str(include_dir))
    key = hashlib.sha256(b"\0".join([source, *(p.encode() for p in parts)])).hexdigest()[:16]
    folder = kernel_cache_dir()
    library = folder / f"mixture_total_{key}.so"
    if library.exists():
        return library
    folder.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: a concurrent process never loads half a file.
    fd, partial = tempfile.mkstemp(suffix=".so", dir=folder)
    os.close(fd)
    try:
        subprocess.run(
            [*shlex.split(compiler), *FLAGS, f"-I{include_dir}", str(SOURCE), "-o", partial],
            check=True,
            capture_output=True,
            text=True,
            timeout=300,
        )
        os.replace(partial, library)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library


def mixture_total_target():
    """The FFI target name of the compiled fused mixture sum, or ``None`` where there is
    none (see the module docstring). Builds and registers it on the first call."""
    with _LOCK:
        if "target" in _STATE:
            return _STATE["target"]
        _STATE["target"] = None
        if os.environ.get("BAYES_GMM_NATIVE", "1") == "0":
            return None
        try:
            import jax

            library = _build(jax.ffi.include_dir())
            handler = ctypes.cdll.LoadLibrary(str(library)).BayesGmmMixtureTotal
            jax.ffi.register_ffi_target(TARGET, jax.ffi.pycapsule(handler), platform="cpu")
        except Exception as exc:  # any failure leaves the JAX form, which is correct
            detail = getattr(exc, "stderr", None) or str(exc)
            warnings.warn(
                "bayes_gmm could not build its compiled mixture kernel, so NUTS uses the "
                f"slower JAX form of the same pass ({type(exc).__name__}: "
                f"{detail.strip()[-300:]}). Install a C++ compiler (g++) or set $CXX; "
                "BAYES_GMM_NATIVE=0 silences this.",
                RuntimeWarning,
                stacklevel=2,
            )
            return None
        _STATE["target"] = TARGET
        return TARGET
