"""The command line's option values: the ``type=`` functions of its argument parser.

Each turns one option's text into a value, or raises :class:`argparse.ArgumentTypeError`
with a message that says what is accepted (argparse prints it and exits with status 2).
:func:`missing_option` reads ``--missing`` from the parsed arguments (``demo`` has none).
"""

from __future__ import annotations

import argparse

from bayes_gmm.structures import MCLUST_MODELS, SKLEARN_NAMES, is_structure

# --prior's values; "default" was the old name of "conjugate" (it was never the default).
_PRIOR_CHOICES = ("none", "conjugate", "mclust")
PRIOR_ALIASES = {"default": "conjugate"}


def parse_k(text):
    """Parse ``--k``: ``"3"``, ``"1:9"`` (inclusive) or ``"2,3,5"``; returns a sorted list."""
    text = str(text).strip()
    try:
        if ":" in text:
            lo, hi = (int(part) for part in text.split(":"))
            values = list(range(lo, hi + 1))
        else:
            values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid K {text!r}: use a number (3), an inclusive range (1:9) or a list (2,3,5)"
        ) from None
    if not values:
        raise argparse.ArgumentTypeError(f"invalid K {text!r}: the range is empty")
    if min(values) < 1:
        raise argparse.ArgumentTypeError(f"invalid K {text!r}: K must be at least 1")
    return sorted(set(values))


def parse_covariance(text):
    """Parse ``--covariance``: comma-separated structures, or ``all`` (mclust's 14 models).

    scikit-learn's names and mclust's codes are accepted in any case and returned as
    spelled in the library ("FULL" -> "full", "vev" -> "VEV"), so that the table names each
    as given; ``all`` is mclust's 14 codes, as the default grid.
    """
    names = [part.strip() for part in str(text).split(",") if part.strip()]
    if [n.lower() for n in names] == ["all"]:
        return MCLUST_MODELS
    out = []
    for name in names:
        key = name.lower() if name.lower() in SKLEARN_NAMES else name.upper()
        if not is_structure(key):
            raise argparse.ArgumentTypeError(
                f"invalid covariance structure {name!r}: choose from "
                f"{', '.join(SKLEARN_NAMES)} or mclust's models ({', '.join(MCLUST_MODELS)}), "
                "comma-separated, or all"
            )
        if key not in out:
            out.append(key)
    if not out:
        raise argparse.ArgumentTypeError("no covariance structure given")
    return tuple(out)


def parse_prior(text):
    name = str(text).strip().lower()
    if PRIOR_ALIASES.get(name, name) not in _PRIOR_CHOICES:
        raise argparse.ArgumentTypeError(
            f"invalid prior {text!r}: choose 'none' (maximum likelihood, the default), "
            "'conjugate' (MAP under the package's conjugate prior) or 'mclust' (the same with "
            "mclust's priorControl scale for the diagonal models)"
        )
    return name  # an old alias is kept as typed, so that the run can say it is deprecated


def positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_columns(text):
    cols = [c.strip() for c in str(text).split(",") if c.strip()]
    if not cols:
        raise argparse.ArgumentTypeError("--columns needs at least one column name")
    return cols


def missing_option(args):
    return getattr(args, "missing", "error")  # demo: its data is complete
