"""The command line's fits: the EM selection grid and the posterior, run and reported.

:func:`run_grid` fits the grid over K and covariance structures and :func:`print_selection`
shows its best rows (:func:`failed_cells_text` its failed cells, grouped by reason);
:func:`check_posterior_supported` and :func:`posterior_choice` pick a model whose
posterior can be sampled, and :func:`fit_posterior` samples it with NUTS.
"""

from __future__ import annotations

from bayes_gmm._cli_args import PRIOR_ALIASES, missing_option
from bayes_gmm._cli_report import CLIError
from bayes_gmm.structures import MCLUST_MODELS, canonical_name, get_structure


def _prior(name, rep):
    if name in PRIOR_ALIASES:
        new = PRIOR_ALIASES[name]
        rep.warning(f"--prior {name} is deprecated and will be removed; use --prior {new}")
        name = new
    if name == "none":
        return None
    from bayes_gmm.priors import GaussianMixturePrior

    return GaussianMixturePrior(diagonal_scale="mean" if name == "mclust" else "per_column")


def run_grid(frame, args, rep):
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


def check_posterior_supported(types):
    """``fit`` samples a posterior: fail before the grid if no structure asked for has one."""
    if types is not None and not _posterior_structures(types):
        supported = [canonical_name(t) for t in MCLUST_MODELS]
        supported = [t for t in supported if get_structure(t).posterior_supported]
        raise CLIError(
            f"the posterior can be sampled for {', '.join(supported)}, and none of "
            f"--covariance {','.join(types)} is among them; add one of those, or run "
            "'bayes-gmm select' for the EM grid alone"
        )


def posterior_choice(selection, best, criterion, rep):
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


def print_selection(selection, best, criterion, rep):
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


def fit_posterior(X, best, args, rep):
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
