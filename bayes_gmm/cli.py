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
"""

from __future__ import annotations

import argparse
import os
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from bayes_gmm._cli_args import (
    PRIOR_ALIASES,
    missing_option,
    parse_columns,
    parse_covariance,
    parse_k,
    parse_prior,
    positive_int,
)
from bayes_gmm._cli_folder import check_output, results_folder
from bayes_gmm._cli_input import DELIMITER_NAMES, check_rows_for_k, read_data
from bayes_gmm._cli_report import PROG, CLIError, Reporter, version
from bayes_gmm._cli_results import (
    diagnostics_text,
    save_selection_outputs,
    write_posterior_outputs,
)
from bayes_gmm.structures import (
    MCLUST_MODELS,
    canonical_name,
    get_structure,
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


# --------------------------------------------------------------------------- pipeline


def _prior(name, rep):
    if name in PRIOR_ALIASES:
        new = PRIOR_ALIASES[name]
        rep.warning(f"--prior {name} is deprecated and will be removed; use --prior {new}")
        name = new
    if name == "none":
        return None
    from bayes_gmm.priors import GaussianMixturePrior

    return GaussianMixturePrior(diagonal_scale="mean" if name == "mclust" else "per_column")


def _run_grid(frame, args, rep):
    from bayes_gmm import select_model
    from bayes_gmm.selection import default_covariance_types

    types = args.covariance or default_covariance_types(frame.shape[1])
    n_cells = len(args.k) * len(types)
    rep.progress(
        f"selection grid: K in {_k_text(args.k)} x {_types_text(types)} "
        f"({n_cells} EM fits, criterion {args.criterion.upper()})"
    )
    prior = _prior(args.prior, rep)
    # The frame, not its values: warnings then name columns as the data does.
    with rep.warnings_as_lines():
        selection = select_model(
            frame,
            n_components=args.k,
            covariance_types=types,
            criterion=args.criterion,
            prior=prior,
            random_state=args.seed,
            verbose=rep.bars,
            missing=missing_option(args),
        )
    cov, k = _best(selection, rep)
    rep.progress(f"grid done: best {cov} with K = {k}")
    return selection, (cov, k)


def failed_cells_text(selection, limit=5):
    """``"N of M cells failed"`` and the reasons, each with its cells; ``""`` if none failed.

    Parameters
    ----------
    selection : ModelSelection
    limit : int, default=5
        Distinct reasons shown; more are counted.

    Returns
    -------
    str
    """
    table = selection.table
    failed = table[table[selection.criterion].isna()]
    if failed.empty:
        return ""
    lines = [f"{len(failed)} of {len(table)} cells of the grid failed:"]
    # A reason's first clause; reasons that differ only in the cell's K or in which
    # components collapsed are one reason (selection.csv keeps them whole).
    general = (
        failed["reason"]
        .fillna("")
        .astype(str)
        .str.split(r"; |, e\.g\.|(?<!e\.g)\. ", n=1, regex=True)
        .str[0]
        .str.replace(r"\bK=\d+\b", "K", regex=True)
        .str.replace(r"component\(s\) \[[\d, ]*\]", "component(s)", regex=True)
    )
    groups = list(failed.groupby(general.to_numpy(), sort=False))
    groups.sort(key=lambda item: -len(item[1]))  # the most frequent reasons first
    for reason, rows in groups[:limit]:
        lines.append(f"  {_cells_text(rows)}: {reason or 'no reason recorded'}")
    if len(groups) > limit:
        lines.append(f"  ... and {len(groups) - limit} other reason(s): see selection.csv")
    return "\n".join(lines)


def _types_text(types):
    """Structures by name, or "mclust's 14 models" for all of them as the default names them."""
    return "mclust's 14 models" if tuple(types) == MCLUST_MODELS else ", ".join(types)


def _cells_text(rows):
    """Cells compactly: ``K=4..9 x full, tied`` when they form a grid, else a short list."""
    ks = sorted({int(k) for k in rows["n_components"]})
    types = list(dict.fromkeys(rows["covariance_type"]))
    if len(rows) == len(ks) * len(types) and len(ks) > 1 and len(types) > 1:
        return f"K={_k_text(ks)} x {_types_text(types)}"
    cells = [
        f"{c} K={k}" for c, k in zip(rows["covariance_type"], rows["n_components"], strict=True)
    ]
    return ", ".join(cells[:4]) + (f" and {len(cells) - 4} more" if len(cells) > 4 else "")


def _posterior_structures(types):
    return [t for t in types if get_structure(t).posterior_supported]


def _check_posterior_supported(types):
    """``fit`` samples a posterior: fail before the grid if no structure asked for has one."""
    if types is not None and not _posterior_structures(types):
        supported = [canonical_name(t) for t in MCLUST_MODELS]
        supported = [t for t in supported if get_structure(t).posterior_supported]
        raise CLIError(
            f"the posterior can be sampled for {', '.join(supported)}, and none of "
            f"--covariance {','.join(types)} is among them; add one of those, or run "
            "'bayes-gmm select' for the EM grid alone"
        )


def _posterior_choice(selection, best, criterion, rep):
    """The best cell whose structure the posterior supports (the grid's best if it is)."""
    if get_structure(best[0]).posterior_supported:
        return best
    choice = selection.best_posterior_params(criterion)
    if choice is None:
        raise CLIError(
            f"the best model, {best[0]} with K = {best[1]}, and every other fitted cell have "
            "structures whose posterior cannot be sampled; add full, tied, diag or spherical "
            "to --covariance"
        )
    score = selection.table.set_index(["covariance_type", "n_components"]).loc[choice, criterion]
    rep.result(
        f"The posterior of {best[0]} is not supported; sampling the best supported model, "
        f"{choice[0]} with K = {choice[1]} ({criterion.upper()} {score:.2f})."
    )
    return choice


def _best(selection, rep):
    if selection.best_params is None:
        rep.result(failed_cells_text(selection))
        raise CLIError(
            "no cell of the selection grid could be fitted (the reasons are listed above); "
            "try a smaller --k or check the data"
        )
    cov, k = selection.best_params
    return cov, int(k)


def _k_text(ks):
    if len(ks) > 2 and ks == list(range(ks[0], ks[-1] + 1)):
        return f"{ks[0]}..{ks[-1]}"
    return ",".join(map(str, ks))


def _print_selection(selection, best, criterion, rep):
    import pandas as pd

    shown = selection.ranking  # the five best rows
    with pd.option_context("display.width", 120, "display.max_columns", 20):
        rep.result(f"Model selection ({criterion.upper()}, lower is better), best rows:")
        if not shown["reason"].astype(str).str.strip().any():
            shown = shown.drop(columns="reason")
        rep.result(shown.to_string(float_format=lambda v: f"{v:.2f}"))
    failed = failed_cells_text(selection)
    if failed:
        rep.result("\n" + failed)
    cov, k = best
    rep.result(f"\nChosen model: covariance_type={cov!r}, n_components={k}")


def _fit_posterior(X, best, args, rep):
    from bayes_gmm import BayesianGaussianMixture
    from bayes_gmm.diagnostics import SamplingWarning

    cov, k = best
    rep.progress(
        f"posterior: NUTS, {args.chains} chains x ({args.tune} tune + {args.draws} draws) "
        f"for {cov}, K = {k}"
    )
    model = BayesianGaussianMixture(
        n_components=k,
        covariance_type=cov,
        draws=args.draws,
        tune=args.tune,
        chains=args.chains,
        random_state=args.seed,
        progressbar=rep.bars,
        missing=missing_option(args),
    )
    # Sampling problems are listed with the diagnostics (one "- problem" line each); any
    # other warning is shown once, on one line.
    with rep.warnings_as_lines(skip=(SamplingWarning,)):
        model.fit(X)
    rep.progress("sampling done")
    return model


def _pipeline(frame, args, rep):
    """Grid -> posterior -> outputs; shared by ``fit`` and ``demo``."""
    import pandas as pd

    from bayes_gmm._display import format_summary

    selection, best = _run_grid(frame, args, rep)
    _print_selection(selection, best, args.criterion, rep)
    best = _posterior_choice(selection, best, args.criterion, rep)
    with results_folder(args.out, overwrite=args.overwrite) as folder:
        save_selection_outputs(selection, args.criterion, folder)
        model = _fit_posterior(frame, best, args, rep)
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
    selection, best = _run_grid(frame, args, rep)
    _print_selection(selection, best, args.criterion, rep)
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
    _check_posterior_supported(args.covariance)
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
