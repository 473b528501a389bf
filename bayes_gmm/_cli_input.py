"""The command line's input: read the data table and check it before any fitting.

:func:`read_data` reads a CSV file (its delimiter and decimal comma sniffed from its first
lines) into a numeric DataFrame, or raises :class:`~bayes_gmm._cli_report.CLIError` with
one line that says what is wrong and what to do; :func:`check_rows_for_k` refuses a table
too short for the numbers of components asked for.
"""

from __future__ import annotations

import csv
import shlex
from pathlib import Path

from bayes_gmm._cli_report import CLIError

# Delimiters a CSV file may use instead of the comma (sniffed from its first lines).
_DELIMITERS = ",;\t|"
DELIMITER_NAMES = {";": "semicolon", "\t": "tab", "|": "pipe", ",": "comma"}


def read_data(path, columns=None, dropna=False, missing="error"):
    """Read a CSV file into a numeric DataFrame, or raise :class:`CLIError` saying why not.

    Parameters
    ----------
    path : path-like
    columns : list of str, optional
        Columns to keep, in this order. Default: all.
    dropna : bool, default=False
        Drop rows with missing values.
    missing : {"error", "em"}, default="error"
        Without ``dropna``: "error" refuses missing values; "em" keeps them as NaN (rows
        or columns with every value missing are still refused).

    Returns
    -------
    DataFrame of shape (n_rows, n_columns), float
    """
    import numpy as np
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise CLIError(f"data file '{path}' not found; check the path")
    if path.is_dir():
        raise CLIError(f"'{path}' is a folder, not a CSV file")
    try:
        options = _csv_dialect(path)
        frame = pd.read_csv(path, **options)
    except pd.errors.EmptyDataError:
        raise CLIError(f"'{path}' is empty; expected a CSV file with a header row") from None
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CLIError(f"could not read '{path}' as CSV ({first})") from None
    if frame.shape[1] == 0 or frame.shape[0] == 0:
        raise CLIError(f"'{path}' has no data rows; expected a header row and numbers below it")

    if columns is not None:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise CLIError(
                f"column(s) {', '.join(missing)} not in '{path}'; available: "
                f"{', '.join(map(str, frame.columns))}"
            )
        frame = frame[columns]

    non_numeric = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    if non_numeric:
        col = non_numeric[0]
        bad = pd.to_numeric(frame[col], errors="coerce").isna() & frame[col].notna()
        example = ""
        if bad.any():
            row = int(bad.to_numpy().nonzero()[0][0])
            example = f" (e.g. {frame[col].iloc[row]!r} in data row {row + 1})"
        numeric = [str(c) for c in frame.columns if c not in non_numeric]
        delimiter = _likely_delimiter(frame[col])
        if delimiter is not None:
            hint = (
                f"the file looks {DELIMITER_NAMES[delimiter]}-separated, not comma-separated; "
                "save it with commas"
            )
        elif numeric:
            # Quoted, so that the suggestion can be pasted into a shell as it is.
            hint = f"choose numeric columns with --columns {shlex.quote(','.join(numeric))}"
        else:
            hint = "convert them to numbers"
        raise CLIError(
            f"column(s) {', '.join(map(str, non_numeric))} of '{path}' are not numeric"
            f"{example}; {hint}"
        )

    isna = frame.isna()
    if isna.to_numpy().any():
        rows = isna.any(axis=1)
        cols = [str(c) for c in frame.columns[isna.any(axis=0)]]
        if missing == "em" and not dropna:
            _check_missing_em(frame, isna, path)
        elif not dropna:
            raise CLIError(
                f"{int(rows.sum())} of {len(frame)} rows of '{path}' have missing values "
                f"(in column(s) {', '.join(cols)}); rerun with --missing em to use every "
                "row's observed values, or --dropna to drop those rows"
            )
        else:
            frame = frame.loc[~rows]
            if frame.empty:
                raise CLIError(f"every row of '{path}' has a missing value; nothing left to fit")
    values = frame.to_numpy(dtype=float)
    if np.isinf(values).any():
        cols = [str(c) for c in frame.columns[np.isinf(values).any(axis=0)]]
        raise CLIError(
            f"column(s) {', '.join(cols)} of '{path}' contain infinite values; remove them"
        )
    frame = frame.astype(float).reset_index(drop=True)
    frame.attrs["delimiter"] = options.get("sep", ",")
    return frame


def _check_missing_em(frame, isna, path):
    """With --missing em: refuse what the observed-data likelihood cannot use."""
    empty_cols = [str(c) for c in frame.columns[isna.all(axis=0)]]
    if empty_cols:
        kept = [str(c) for c in frame.columns if str(c) not in empty_cols]
        hint = (
            f"leave it out with --columns {shlex.quote(','.join(kept))}"
            if kept
            else "choose other columns"
        )
        raise CLIError(
            f"column(s) {', '.join(empty_cols)} of '{path}' have no value at all; {hint}"
        )
    empty_rows = isna.all(axis=1).to_numpy().nonzero()[0]
    if empty_rows.size:
        shown = ", ".join(str(r + 1) for r in empty_rows[:5])
        more = ", ..." if empty_rows.size > 5 else ""
        raise CLIError(
            f"{empty_rows.size} row(s) of '{path}' have every value missing (data row(s) "
            f"{shown}{more}); they carry no information: delete them from the file"
        )


def _csv_dialect(path):
    """``read_csv`` options for the file's delimiter (and decimal comma), sniffed from its head.

    A comma-separated file (or one the sniffer cannot judge) gets pandas' defaults.
    """
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            sample = handle.read(64 * 1024)
    except (OSError, UnicodeDecodeError):
        return {}  # read_csv reports the problem
    lines = [line for line in sample.splitlines() if line.strip()][:50]
    if len(lines) < 2:
        return {}
    try:
        dialect = csv.Sniffer().sniff("\n".join(lines), delimiters=_DELIMITERS)
    except csv.Error:
        return {}
    sep = dialect.delimiter
    if sep == "," or lines[0].count(sep) <= lines[0].count(","):
        return {}
    options = {"sep": sep}
    # Files separated by semicolons usually write decimals with a comma (2,5).
    body = "\n".join(lines[1:])
    if sep == ";" and "," in body and "." not in body:
        options["decimal"] = ","
    return options


def _likely_delimiter(column):
    """The delimiter a non-numeric column holds between numbers (``'2;3.5'``), if any."""
    import pandas as pd

    text = column.dropna().astype(str).head(20)
    for sep in _DELIMITERS.replace(",", ""):
        parts = text.str.split(sep, regex=False)
        if len(text) and (parts.str.len() > 1).all():
            first = pd.to_numeric(parts.str[0], errors="coerce")
            if first.notna().all():
                return sep
    return None


def check_rows_for_k(frame, ks, source):
    n = len(frame)
    k_max = max(ks)
    # A component needs more than one point to have a spread; fewer rows than K + 1
    # leaves at least one component with a single point or none.
    if n < 2:
        raise CLIError(f"{source} has {n} row(s), too few to fit a mixture; use more data")
    if n < k_max + 1:
        raise CLIError(
            f"{source} has {n} rows, too few for K up to {k_max} (need at least {k_max + 1}); "
            f"pass --k 1:{n - 1} or use more data"
        )
