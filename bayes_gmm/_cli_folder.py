"""The command line's results folder: checked before any work, written atomically.

:func:`check_output` fails at once if the folder could not be written at the end;
:func:`results_folder` yields a hidden temporary folder next to the target and renames it
into place on success, so a failed or interrupted run never leaves a half-written folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from bayes_gmm._cli_report import CLIError


def _refuse_existing(target, overwrite):
    if Path(target).exists() and not overwrite:
        raise CLIError(
            f"output folder '{target}' already exists; pass --overwrite to replace it or "
            "--out to choose another"
        )


def check_output(target, overwrite=False):
    """Fail now, before any computing, if the results folder could not be written at the end.

    Refuses an existing folder (without ``overwrite``), an existing file, a path below a
    file, and a place where no folder can be created (tried with an empty temporary folder
    in the nearest existing parent, removed at once).
    """
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise CLIError(f"output path '{target}' exists and is not a folder; choose another --out")
    _refuse_existing(target, overwrite)
    parent = target.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise CLIError(
            f"cannot write '{target}': '{parent}' is a file, not a folder; choose another --out"
        )
    try:
        Path(tempfile.mkdtemp(prefix=f".{target.name}.check-", dir=parent)).rmdir()
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise CLIError(
            f"cannot write the results folder '{target}' ({reason} in '{parent}'); "
            "choose another --out"
        ) from None


@contextmanager
def results_folder(target, overwrite=False):
    """Yield a temporary folder next to ``target``; rename it to ``target`` on success.

    On any error (or Ctrl-C) the temporary folder is removed and ``target`` is left as it
    was, so no half-written results folder is ever visible at ``target``.
    """
    from bayes_gmm.storage import replace_path

    target = Path(target)
    _refuse_existing(target, overwrite)
    if target.exists() and not target.is_dir():
        raise CLIError(f"output path '{target}' exists and is not a folder; choose another --out")
    parent = target.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=parent))
        # mkdtemp makes a private (0700) folder; results get the usual permissions.
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)
    except OSError as exc:
        raise CLIError(f"cannot create the output folder next to '{target}': {exc}") from None
    try:
        yield tmp
        # The library's atomic swap: the old folder comes back if the rename fails.
        replace_path(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
