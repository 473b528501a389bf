"""The ``bayes-gmm`` command line.

Subcommands
-----------
``bayes-gmm demo``
    Old Faithful end to end: the selection grid, the chosen model's posterior by NUTS,
    the diagnostics verdict, and a results folder with tables and figures.
``bayes-gmm fit DATA.csv``
    The same on your data.
``bayes-gmm select DATA.csv``
    Only the EM selection grid (fast); writes the table and its figure with ``--out``.

Exit status: 0 on success, 1 for bad input data or a failed run (one line on stderr says
what is wrong and what to do), 2 for bad command-line usage, 130 when interrupted.
Set ``BAYES_GMM_DEBUG=1`` to get the full traceback of a library error instead.

Results are written into a hidden temporary folder next to the target and renamed into
place at the end, so a failed or interrupted run never leaves a half-written folder.

This module is the entry point: the argument parser, the subcommands and :func:`main`.
Their parts live in private modules: ``_cli_args`` (the options' values), ``_cli_input``
(reading and checking the data table), ``_cli_fitting`` (the EM grid and the posterior,
run and reported), ``_cli_folder`` (the results folder), ``_cli_results`` (the files
written into it) and ``_cli_report`` (progress, results, warnings and errors).
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from bayes_gmm._cli_args import (
    missing_option,
    parse_columns,
    parse_covariance,
    parse_k,
    parse_prior,
    positive_int,
)
from bayes_gmm._cli_fitting import (
    check_posterior_supported,
    fit_posterior,
    posterior_choice,
    print_selection,
    run_grid,
)
from bayes_gmm._cli_folder import check_output, results_folder
from bayes_gmm._cli_input import DELIMITER_NAMES, check_rows_for_k, read_data
from bayes_gmm._cli_report import PROG, CLIError, Reporter, version
from bayes_gmm._cli_results import (
    diagnostics_text,
    save_selection_outputs,
    write_posterior_outputs,
)

__all__ = ["build_parser", "main", "parse_covariance", "parse_k", "read_data"]

# The grid's defaults, which are also the grid that ``demo`` always runs. ``covariance``
# None: select_model's default (mclust's 14 models; its "E" and "V" in one dimension).
_GRID_DEFAULTS = {
    "k": list(range(1, 10)),
    "covariance": None,
    "criterion": "bic",
    "prior": "none",
}


def build_parser():
    """The argument parser (exposed for the docs and for tests)."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Gaussian mixtures with honest uncertainty: choose K and the covariance structure "
            "by BIC over an EM grid, then sample the chosen model's posterior with NUTS."
        ),
        epilog="Run 'bayes-gmm demo' to see the whole pipeline on the Old Faithful data.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,fit,select}")
    sub.required = True

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--quiet", "-q", action="store_true", help="no progress messages or progress bars"
    )
    common.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    common.add_argument(
        "--out", type=Path, default=None, help="results folder (written atomically)"
    )
    common.add_argument(
        "--overwrite", action="store_true", help="replace the results folder if it exists"
    )

    grid = argparse.ArgumentParser(add_help=False)
    grid.add_argument(
        "--k",
        type=parse_k,
        default=_GRID_DEFAULTS["k"],
        metavar="K",
        help="numbers of components to try: 3, 1:9 (default) or 2,3,5",
    )
    grid.add_argument(
        "--covariance",
        type=parse_covariance,
        default=_GRID_DEFAULTS["covariance"],
        metavar="TYPES",
        help="covariance structures to try, comma-separated: mclust's models (VEV, EVE, "
        "...; any case) and scikit-learn's full,tied,diag,spherical; default: all (mclust's "
        "14; its E and V for one column)",
    )
    grid.add_argument(
        "--criterion",
        choices=("bic", "aic", "icl"),
        default=_GRID_DEFAULTS["criterion"],
        help="criterion that picks the model (default: bic; lower is better)",
    )
    grid.add_argument(
        "--prior",
        type=parse_prior,
        default=_GRID_DEFAULTS["prior"],
        metavar="{none,conjugate,mclust}",
        help="EM grid by maximum likelihood ('none', the default, as mclust) or MAP under the "
        "package's conjugate prior ('conjugate'; 'default' is its deprecated old name), or "
        "under mclust's priorControl exactly ('mclust': the diagonal models' scale is the mean "
        "variance); the posterior always uses the conjugate prior chosen",
    )

    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("data", type=Path, metavar="DATA.csv", help="a CSV file with a header row")
    data.add_argument(
        "--columns",
        type=parse_columns,
        default=None,
        metavar="A,B",
        help="comma-separated columns to use (default: all)",
    )
    holes = data.add_mutually_exclusive_group()
    holes.add_argument(
        "--dropna", action="store_true", help="drop rows with missing values instead of failing"
    )
    holes.add_argument(
        "--missing",
        choices=("error", "em"),
        default="error",
        help="what an empty cell means: 'error' (the default) stops the run; 'em' keeps "
        "every row and reads it as missing at random (EM and the posterior use each row's "
        "observed values; criteria are the observed-data ones)",
    )

    sampler = argparse.ArgumentParser(add_help=False)
    sampler.add_argument(
        "--draws", type=positive_int, default=1000, help="draws per chain (default: 1000)"
    )
    sampler.add_argument(
        "--tune", type=positive_int, default=1000, help="tuning steps per chain (default: 1000)"
    )
    sampler.add_argument(
        "--chains", type=positive_int, default=4, help="number of chains (default: 4)"
    )

    p_demo = sub.add_parser(
        "demo",
        parents=[common, sampler],
        help="the whole pipeline on Old Faithful (no arguments needed)",
        description="Old Faithful: selection grid, the chosen model's posterior by NUTS, "
        "diagnostics verdict, and a results folder (default: bayes_gmm_results) with figures.",
    )
    p_demo.set_defaults(func=_run_demo, **_GRID_DEFAULTS)

    p_fit = sub.add_parser(
        "fit",
        parents=[data, grid, sampler, common],
        help="selection grid + posterior of the chosen model on a CSV file",
        description="Choose K and the covariance structure by the EM grid, sample the chosen "
        "model's posterior with NUTS, and write the posterior, tables and figures into --out "
        "(default: <DATA>_bayes_gmm next to the data file).",
    )
    p_fit.set_defaults(func=_run_fit)

    p_select = sub.add_parser(
        "select",
        parents=[data, grid, common],
        help="only the EM selection grid (fast)",
        description="Fit the EM grid over K and covariance structures and print the ranking. "
        "With --out, also write selection.csv and selection.png.",
    )
    p_select.set_defaults(func=_run_select)
    return parser


# --------------------------------------------------------------------------- subcommands


def _pipeline(frame, args, rep):
    """Grid -> posterior -> outputs; shared by ``fit`` and ``demo``."""
    import pandas as pd

    from bayes_gmm._display import format_summary

    selection, best = run_grid(frame, args, rep)
    print_selection(selection, best, args.criterion, rep)
    best = posterior_choice(selection, best, args.criterion, rep)
    with results_folder(args.out, overwrite=args.overwrite) as folder:
        save_selection_outputs(selection, args.criterion, folder)
        model = fit_posterior(frame, best, args, rep)
        rep.progress(f"writing results into {args.out}")
        summary, diag = write_posterior_outputs(model, frame, folder, rep, args.command)
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        rep.result("\nPosterior summary:")
        rep.result(format_summary(summary).to_string())
    rep.result("")
    rep.result(diagnostics_text(diag))
    rep.result(f"\nResults written to {args.out}/")
    return 0


def _read(args):
    frame = read_data(args.data, args.columns, args.dropna, missing_option(args))
    check_rows_for_k(frame, args.k, f"'{args.data}'")
    return frame


def _describe(frame, args, rep):
    sep = frame.attrs.get("delimiter", ",")
    how = f", {DELIMITER_NAMES[sep]}-separated" if sep != "," else ""
    rep.progress(
        f"data: {len(frame)} rows x {frame.shape[1]} columns ({', '.join(map(str, frame.columns))})"
        f" from '{args.data}'{how}"
    )
    holes = int(frame.isna().any(axis=1).sum())
    if holes:
        rep.progress(
            f"{holes} row(s) with missing values, read as missing at random (--missing em)"
        )


def _run_select(args, rep):
    frame = _read(args)
    if args.out is not None:
        check_output(args.out, args.overwrite)  # fail before the grid runs, not after
    _describe(frame, args, rep)
    selection, best = run_grid(frame, args, rep)
    print_selection(selection, best, args.criterion, rep)
    if args.out is not None:
        with results_folder(args.out, overwrite=args.overwrite) as folder:
            save_selection_outputs(selection, args.criterion, folder)
        rep.result(f"\nResults written to {args.out}/")
    return 0


def _default_out(args, stem):
    if args.out is None:
        args.out = Path(stem)
    check_output(args.out, args.overwrite)  # fail before any work, not after


def _run_fit(args, rep):
    check_posterior_supported(args.covariance)
    frame = _read(args)
    _default_out(args, args.data.with_name(f"{args.data.stem}_bayes_gmm"))
    _describe(frame, args, rep)
    return _pipeline(frame, args, rep)


def _run_demo(args, rep):
    from bayes_gmm.datasets import load_faithful

    _default_out(args, "bayes_gmm_results")
    frame = load_faithful()
    frame.attrs["units"] = dict.fromkeys(frame.columns, "min")
    columns = ", ".join(f"{name} [{unit}]" for name, unit in frame.attrs["units"].items())
    rep.progress(f"Old Faithful: {len(frame)} eruptions x ({columns})")
    return _pipeline(frame, args, rep)


# --------------------------------------------------------------------------- entry point


def main(argv=None, *, stdout=None, stderr=None):
    """Run the command line; returns the exit status.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; default ``sys.argv[1:]``.
    stdout, stderr : file-like, optional
        Where results and progress/errors go (default: the process's streams).

    Returns
    -------
    int
        0 on success, 1 for bad data or a failed run, 2 for bad usage, 130 if interrupted.
    """
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        with redirect_stdout(stdout or sys.stdout), redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: --help/--version (0) or usage errors (2)
        return int(exc.code or 0)
    rep = Reporter(args.quiet, stdout=stdout, stderr=stderr)
    if "matplotlib.pyplot" not in sys.modules:
        # Figures are only saved: a command-line run must not need a display. A caller
        # that already chose a backend (pyplot imported) keeps it; no environment change.
        import matplotlib

        matplotlib.use("Agg")
    try:
        return args.func(args, rep)
    except CLIError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 1
    except ValueError as exc:
        if os.environ.get("BAYES_GMM_DEBUG"):
            raise
        # Validation errors from the library are written for users: show the first line.
        print(f"{PROG}: error: {str(exc).strip().splitlines()[0]}", file=err)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; no results folder was written", file=err)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
