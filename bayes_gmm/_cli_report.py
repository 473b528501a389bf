"""What the command line says to its user: progress, results, warnings and errors.

:class:`Reporter` prints progress on stderr and results on stdout; :class:`CLIError` is an
error whose message the CLI prints on one line; ``PROG`` and :func:`version` name the
program in usage, warnings, errors and the results' README.
"""

from __future__ import annotations

import sys
import time
import warnings
from contextlib import contextmanager

PROG = "bayes-gmm"


class CLIError(Exception):
    """An error with a message meant for the user; the CLI prints it on one line."""


def version():
    from bayes_gmm import __version__

    return __version__


class Reporter:
    """Progress on stderr (silenced by --quiet); results on stdout.

    Progress bars (the grid's, the sampler's) redraw a line in place: they are drawn only
    when stderr is a terminal, since in a file or a pipe they become one long line.
    """

    def __init__(self, quiet, stdout=None, stderr=None):
        self.quiet = quiet
        self.out = stdout if stdout is not None else sys.stdout
        self.err = stderr if stderr is not None else sys.stderr
        self._t0 = time.perf_counter()
        isatty = getattr(self.err, "isatty", None)
        self.bars = not quiet and bool(isatty and isatty())
        self._warned = set()

    def progress(self, message):
        if not self.quiet:
            elapsed = time.perf_counter() - self._t0
            print(f"[{elapsed:6.1f}s] {message}", file=self.err, flush=True)

    def result(self, text=""):
        print(text, file=self.out, flush=True)

    def warning(self, message):
        """A library warning as one line (its first), each distinct one once."""
        text = str(message).strip()
        first = text.splitlines()[0] if text else ""
        if first and first not in self._warned:
            self._warned.add(first)
            print(f"{PROG}: warning: {first}", file=self.err, flush=True)

    @contextmanager
    def warnings_as_lines(self, skip=()):
        """Show every warning raised inside as one line (not Python's two-line format)."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                yield
            finally:
                for w in caught:
                    if not issubclass(w.category, tuple(skip)):
                        self.warning(w.message)
