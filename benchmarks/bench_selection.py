"""Benchmark: the selection grid (4 structures x K = 1..9) against R's mclust.

Runs ``bayes_gmm.select_model`` and, where ``Rscript`` and the mclust package are installed
(``apt-get install r-cran-mclust``), ``Mclust(X, G = 1:9, modelNames = c("VVV", "EEE",
"VVI", "VII"))`` on the same data in the same run, and prints both times and their ratio.
mclust is timed twice: the ``Mclust`` call alone (``system.time`` inside R) and the whole
``Rscript`` subprocess (R start-up, loading mclust, reading the CSV).

Ours is timed as the best of ``--repeat`` calls after a first call, which is printed on its
own: it loads the compiled EM kernel from numba's disk cache, or compiles it once per
installation (``--cold-cache`` points numba at an empty cache to show that cost).

Cases: Old Faithful (272 x 2, shipped with the package) and a simulated 1e5 x 5 mixture of
4 full-covariance components (``make_mixture(100_000, 4, 5, random_state=0)``).

Usage::

    python benchmarks/bench_selection.py            # both cases
    python benchmarks/bench_selection.py --case faithful --repeat 3
    python benchmarks/bench_selection.py --profile  # where our time goes (cProfile)
    python benchmarks/bench_selection.py --case faithful --cold-cache  # first-install cost
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

if "--cold-cache" in sys.argv:  # before bayes_gmm can import numba
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp(prefix="bench_selection_numba_")

from bayes_gmm import select_model
from bayes_gmm.datasets import load_faithful, make_mixture

TYPES = ("full", "tied", "diag", "spherical")
MCLUST_MODELS = {"VVV": "full", "EEE": "tied", "VVI": "diag", "VII": "spherical"}

R_SCRIPT = r"""
suppressPackageStartupMessages(library(mclust))
args <- commandArgs(trailingOnly = TRUE)
X <- as.matrix(read.csv(args[1], header = FALSE))
t <- system.time(m <- Mclust(X, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII"),
                             verbose = FALSE))
cat("MCLUST_ELAPSED", t[["elapsed"]], "\n")
cat("MCLUST_BEST", m$modelName, m$G, format(m$bic, digits = 15), "\n")
"""


def _cases(which):
    if which in ("faithful", "all"):
        yield "faithful 272 x 2", load_faithful(as_frame=False)
    if which in ("sim", "all"):
        X, _, _ = make_mixture(100_000, 4, 5, covariance_type="full", random_state=0)
        yield "simulated 1e5 x 5 (K=4 full)", X


def mclust_available():
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(
        ["Rscript", "-e", "suppressPackageStartupMessages(library(mclust))"],
        capture_output=True,
        check=False,
    )
    return probe.returncode == 0


def run_mclust(X):
    """(seconds in the Mclust call, seconds of the whole Rscript run, model, G, BIC ours-sign)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "X.csv"
        script = Path(tmp) / "bench.R"
        np.savetxt(data, X, delimiter=",", fmt="%.17g")
        script.write_text(R_SCRIPT)
        start = time.perf_counter()
        out = subprocess.run(
            ["Rscript", str(script), str(data)], capture_output=True, text=True, check=True
        ).stdout
        total = time.perf_counter() - start
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    model, g, bic = fields["MCLUST_BEST"]
    return float(fields["MCLUST_ELAPSED"][0]), total, MCLUST_MODELS[model], int(g), -float(bic)


def run_ours(X, repeat):
    """(seconds of the first call, best seconds of ``repeat`` further calls, the result)."""
    times, sel = [], None
    for _ in range(repeat + 1):
        start = time.perf_counter()
        sel = select_model(X, range(1, 10), TYPES, random_state=0, verbose=False)
        times.append(time.perf_counter() - start)
    return times[0], min(times[1:]), sel


def profile_ours(X):
    profiler = cProfile.Profile()
    profiler.enable()
    select_model(X, range(1, 10), TYPES, random_state=0, verbose=False)
    profiler.disable()
    stream = io.StringIO()
    pstats.Stats(profiler, stream=stream).sort_stats("cumulative").print_stats(25)
    return stream.getvalue()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("faithful", "sim", "all"), default="all")
    parser.add_argument(
        "--repeat", type=int, default=3, help="best of this many runs of ours (after a first)"
    )
    parser.add_argument(
        "--cold-cache", action="store_true", help="numba compiles into an empty cache"
    )
    parser.add_argument("--profile", action="store_true", help="print a cProfile of ours")
    args = parser.parse_args(argv)

    have_r = mclust_available()
    print(
        f"cpu count {os.cpu_count()}; load average {os.getloadavg()[0]:.1f}; numba cache "
        f"{'cold' if args.cold_cache else 'as is'}"
    )
    if not have_r:
        print("mclust not found (apt-get install r-cran-mclust): timing ours only")
    for name, X in _cases(args.case):
        print(f"\n== {name}: 4 structures x K = 1..9 (36 cells)")
        first, seconds, sel = run_ours(X, args.repeat)
        ctype, k = sel.best_params
        t = sel.table
        print(
            f"bayes_gmm.select_model : {seconds:8.3f} s   best {ctype} K={k}  "
            f"BIC {sel.best_score:.3f}   "
            f"(EM iterations of the kept starts {int(t['n_iter'].sum())}, "
            f"cells refined to tol {int((t['tol'] < 1e-5).sum())}; first call in this process "
            f"{first:.2f} s)"
        )
        if have_r:
            inner, total, m_type, m_k, m_bic = run_mclust(X)
            print(
                f"mclust Mclust()        : {inner:8.3f} s   best {m_type} K={m_k}  "
                f"BIC {m_bic:.3f}   (whole Rscript run {total:.2f} s)"
            )
            ours_cell = t[(t.covariance_type == m_type) & (t.n_components == m_k)]["bic"].iloc[0]
            print(
                f"ratio ours / mclust    : {seconds / inner:8.2f} x (Mclust call), "
                f"{seconds / total:.2f} x (whole Rscript run)   "
                f"[{'same' if (ctype, k) == (m_type, m_k) else 'DIFFERENT'} model; our BIC in "
                f"mclust's best cell {ours_cell:.3f} vs mclust {m_bic:.3f}]"
            )
        if args.profile:
            print(profile_ours(X))


if __name__ == "__main__":
    main()
