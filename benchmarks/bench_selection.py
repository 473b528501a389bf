"""Benchmark: the selection grid (mclust's 14 models x K = 1..9) against R's mclust.

Runs ``bayes_gmm.select_model(X, covariance_types="all")`` and, where ``Rscript`` and the
mclust package are installed (``apt-get install r-cran-mclust``), ``mclustBIC(X, G = 1:9)``
(all 14 models, mclust's defaults) on the same data in the same run, and prints both times
and their ratio. ``--models four`` compares scikit-learn's four structures with
``mclustBIC(X, G = 1:9, modelNames = c("VVV", "EEE", "VVI", "VII"))`` instead.
mclust is timed twice: the ``mclustBIC`` call alone (``system.time`` inside R; the best
of ``--repeat`` calls, as ours, as long as they take under 30 s in all) and the whole
``Rscript`` subprocess (R start-up, loading mclust, reading the CSV) with one call.

Ours is timed as the best of ``--repeat`` calls after a first call, which is printed on its
own: it loads the compiled EM kernel from numba's disk cache, or compiles it once per
installation (``--cold-cache`` points numba at an empty cache to show that cost).

Cases: Old Faithful (272 x 2, shipped with the package) and a simulated 1e5 x 5 mixture of
4 full-covariance components (``make_mixture(100_000, 4, 5, random_state=0)``).

Usage::

    python benchmarks/bench_selection.py            # both cases, 14 models
    python benchmarks/bench_selection.py --models four
    python benchmarks/bench_selection.py --case faithful --repeat 3
    python benchmarks/bench_selection.py --profile  # where our time goes (cProfile)
    python benchmarks/bench_selection.py --case faithful --cold-cache  # first-install cost
    python benchmarks/bench_selection.py --case faithful --threads 1  # cells one at a time

Ours runs the grid's cells on one thread per core (``--threads`` sets how many); mclust's
``mclustBIC`` runs on one. Both wall and CPU times are printed.
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

from bayes_gmm import _gaussian, select_model
from bayes_gmm.datasets import load_faithful, make_mixture

MODELS = {
    "all": ("all", "NULL"),
    "four": (("VVV", "EEE", "VVI", "VII"), 'c("VVV", "EEE", "VVI", "VII")'),
}

R_SCRIPT = r"""
suppressPackageStartupMessages(library(mclust))
args <- commandArgs(trailingOnly = TRUE)
X <- as.matrix(read.csv(args[1], header = FALSE))
# Best of REPEAT calls, as ours, while the calls so far took under 30 s in all.
elapsed <- Inf; cpu <- Inf; spent <- 0
for (i in seq_len(REPEAT)) {
  t <- system.time(b <- mclustBIC(X, G = 1:9, modelNames = MODEL_NAMES, verbose = FALSE))
  elapsed <- min(elapsed, t[["elapsed"]]); cpu <- min(cpu, t[["user.self"]] + t[["sys.self"]])
  spent <- spent + t[["elapsed"]]
  if (spent > 30) break
}
best <- pickBIC(b, 1)
cat("MCLUST_ELAPSED", elapsed, cpu, i, spent, "\n")
cat("MCLUST_BEST", sub(",", " ", names(best)), format(best, digits = 15), "\n")
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


def run_mclust(X, models, repeat):
    """Best seconds of mclustBIC (wall, CPU) over at most ``repeat`` calls (while they take
    under 30 s in all), the number of calls, the whole Rscript run with one (the best) call;
    model, G, BIC (our sign)."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "X.csv"
        script = Path(tmp) / "bench.R"
        np.savetxt(data, X, delimiter=",", fmt="%.17g")
        script.write_text(
            R_SCRIPT.replace("MODEL_NAMES", MODELS[models][1]).replace("REPEAT", str(repeat))
        )
        start = time.perf_counter()
        out = subprocess.run(
            ["Rscript", str(script), str(data)], capture_output=True, text=True, check=True
        ).stdout
        total = time.perf_counter() - start
    fields = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.strip()}
    model, g, bic = fields["MCLUST_BEST"]
    elapsed, cpu, calls, spent = (float(v) for v in fields["MCLUST_ELAPSED"])
    total += elapsed - spent  # start-up and reading the data, plus one call
    return elapsed, cpu, int(calls), total, model, int(g), -float(bic)


def run_ours(X, repeat, models):
    """Seconds of the first call; best wall and CPU seconds of ``repeat`` more; the result."""
    times, cpu, sel = [], [], None
    for _ in range(repeat + 1):
        start, start_cpu = time.perf_counter(), time.process_time()
        sel = select_model(X, range(1, 10), MODELS[models][0], random_state=0, verbose=False)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return times[0], min(times[1:]), min(cpu[1:]), sel


def profile_ours(X, models):
    profiler = cProfile.Profile()
    profiler.enable()
    select_model(X, range(1, 10), MODELS[models][0], random_state=0, verbose=False)
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
    parser.add_argument(
        "--threads", type=int, default=None, help="our worker threads (default: one per core)"
    )
    parser.add_argument(
        "--models", choices=tuple(MODELS), default="all", help="mclust's 14, or sklearn's four"
    )
    args = parser.parse_args(argv)

    _gaussian.N_WORKERS = args.threads
    have_r = mclust_available()
    print(
        f"cpu count {os.cpu_count()}; our threads {_gaussian.n_available_workers()}; load "
        f"average {os.getloadavg()[0]:.1f}; numba cache {'cold' if args.cold_cache else 'as is'}"
    )
    if not have_r:
        print("mclust not found (apt-get install r-cran-mclust): timing ours only")
    for name, X in _cases(args.case):
        n_models = 14 if args.models == "all" else 4
        print(f"\n== {name}: {n_models} models x K = 1..9 ({9 * n_models} cells)")
        first, seconds, cpu, sel = run_ours(X, args.repeat, args.models)
        ctype, k = sel.best_params
        t = sel.table
        best_code = t[(t.covariance_type == ctype) & (t.n_components == k)]["mclust"].iloc[0]
        print(
            f"bayes_gmm.select_model : {seconds:8.3f} s (CPU {cpu:.3f} s)   best {ctype} K={k}  "
            f"BIC {sel.best_score:.3f}   "
            f"(EM iterations of the kept starts {int(t['n_iter'].sum())}, "
            f"cells refined to tol {int((t['tol'] < 1e-5).sum())}; first call in this process "
            f"{first:.2f} s)"
        )
        if have_r:
            inner, inner_cpu, calls, total, m_type, m_k, m_bic = run_mclust(
                X, args.models, args.repeat
            )
            print(
                f"mclust mclustBIC()     : {inner:8.3f} s (CPU {inner_cpu:.3f} s)   "
                f"best {m_type} K={m_k}  "
                f"BIC {m_bic:.3f}   (best of {calls} call(s); whole Rscript run with one call "
                f"{total:.2f} s)"
            )
            cell = (t.mclust == m_type) & (t.n_components == m_k)
            ours_cell = t[cell]["bic"].iloc[0]
            print(
                f"ratio ours / mclust    : {seconds / inner:8.2f} x (mclustBIC call; CPU "
                f"{cpu / inner_cpu:.2f} x), "
                f"{seconds / total:.2f} x (whole Rscript run)   "
                f"[{'same' if (best_code, k) == (m_type, m_k) else 'DIFFERENT'} model; our BIC in "
                f"mclust's best cell {ours_cell:.3f} vs mclust {m_bic:.3f}]"
            )
        if args.profile:
            print(profile_ours(X, args.models))


if __name__ == "__main__":
    main()
