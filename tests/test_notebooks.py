"""The example notebooks: they run, their stored outputs are current, their prose is true.

The notebooks are stored with the outputs of a full run (they are rendered in the docs).

- ``test_notebook_executes`` runs each on a copy with short chains (``BAYES_GMM_FAST=1``)
  and compares every output that does not depend on the chains' length (cells without
  the ``full-run`` tag: data, EM, the selection grid) with the stored one: a change in the
  package that alters an example's numbers fails here, and the notebook must be rerun.
- ``test_narrative_numbers_come_from_outputs`` checks every number the narrative quotes
  (``CLAIMS``) against the stored outputs, and the ones EM gives (``fresh``) also against
  the fresh run.
- ``test_stored_outputs_are_current`` (slow) reruns with the stored settings and compares
  every output but timings.
"""

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


@dataclass(frozen=True)
class Claim:
    """A phrase of the narrative and the output that backs it.

    ``pattern`` is searched in the text outputs of the code cells; ``check``, if given,
    gets the match and says whether the quoted number holds. ``fresh``: the output does
    not depend on the chains' length, so the short run must show it too.
    """

    phrase: str
    pattern: str
    check: object = None
    fresh: bool = False


def _between(lo, hi, group=1):
    return lambda m: lo <= float(m.group(group)) <= hi


CLAIMS = {
    "01_quickstart": [
        Claim(
            "BIC picks EEE (scikit-learn's tied structure) with three components, BIC 2314.3",
            r"best: covariance_type='EEE', n_components=3, bic=([\d.]+)",
            check=lambda m: round(float(m.group(1)), 1) == 2314.3,
            fresh=True,
        ),
        Claim(
            "no draw needed relabelling",
            r"relabelled draws\s+0, 0, 0, 0 of 1000 per chain",
        ),
        Claim("Chains overlap", r"max r_hat\s+1\.00\d\s+ok"),
    ],
    "02_choosing_k": [
        Claim(
            "BIC prefers three components sharing one covariance (EEE, scikit-learn's tied)",
            r"1\s+EEE, K=3 \(\+0\.0\)",
            fresh=True,
        ),
        Claim(
            "ICL charges for that overlap\nand prefers two clusters",
            r"1\s+EEE, K=3 \(\+0\.0\)\s+[A-Z]{3}, K=2 \(\+0\.0\)",
            fresh=True,
        ),
        Claim(
            "by\nabout 10 in elpd with a standard error of about 5",
            r"tied, K=2\s+1\s+(-[\d.]+)\s+([\d.]+)",
            check=lambda m: 8 <= -float(m.group(1)) <= 12 and 4 <= float(m.group(2)) <= 6,
        ),
        Claim(
            "All Pareto k values are below 0.7",
            r"max Pareto k\s*\ntied, K=2(?:\s+\S+){3}\s+([\d.]+)\s*\n"
            r"tied, K=3(?:\s+\S+){3}\s+([\d.]+)",
            check=lambda m: max(float(m.group(1)), float(m.group(2))) < 0.7,
        ),
        Claim(
            "four well-separated components",
            r"best: covariance_type='[A-Z]{3}', n_components=4",
            fresh=True,
        ),
    ],
    "03_foot_sizes": [
        Claim(
            "Hard EM shrinks the smaller group's standard deviation far below the truth (6 mm)",
            r"mean\s+[\d.]+\s+([\d.]+)\s+[\d.]+\s+[\d.]+\s+7 / 6",
            check=_between(0, 4.5),
        ),
        Claim(
            "(within a few tenths of a millimetre",
            r"mean\s+[\d.]+\s+[\d.]+\s+([\d.]+)\s+([\d.]+)\s+7 / 6",
            check=lambda m: abs(float(m.group(1)) - 7) < 0.5 and abs(float(m.group(2)) - 6) < 0.5,
        ),
        Claim(
            "BIC\nchooses two groups with unequal variances",
            r"best: covariance_type='full' \(V\), n_components=2",
            fresh=True,
        ),
        Claim(
            "The feet between 250 and 262 mm",
            r"252\.0\s+0\.0\d\d.*\n.*256\.0\s+0\.[1-8]\d\d.*\n.*260\.0\s+0\.[2-9]\d\d",
        ),
    ],
    "04_iris": [
        Claim(
            "Same settings: k-means initialization, 10 starts, and scikit-learn's tolerance 1e-3",
            r"bayes_gmm\s+(-180\.\d+)\s+[\d.]+\s+[\d.]+\s*\nscikit-learn\s+(-180\.\d+)",
            check=lambda m: m.group(1) == m.group(2),
            fresh=True,
        ),
        Claim(
            "only a few\nversicolor/virginica flowers are mixed up",
            r"versicolor\s+0\s+45\s+5\s*\nvirginica\s+0\s+0\s+50",
            fresh=True,
        ),
        Claim(
            "The same model as mclust, VEV with 2 components",
            r"best: covariance_type='VEV', n_components=2, bic=([\d.]+)",
            check=lambda m: float(m.group(1)) <= 561.729,  # mclust 6: -561.729 (its sign)
            fresh=True,
        ),
        Claim("The diagnostics refuse to trust this run", r"Verdict: not trustworthy"),
        Claim("three components cost 44 parameters", r"VVV\s+3\s+44\s", fresh=True),
        Claim("24\nparameters", r"EEE\s+3\s+24\s", fresh=True),
        Claim(
            "the memberships it averages agree with\nthe species as well as EM's",
            r"ARI vs species: EM ([\d.]+) \| posterior ([\d.]+)",
            check=lambda m: abs(float(m.group(1)) - float(m.group(2))) < 0.02,
        ),
        Claim(
            "every check passes, and no\ndraw needs relabelling",
            r"max r_hat\s+(1\.0\d\d)\s+ok\s+\(<= 1\.01\)\s*\n(?:.*\n){3}"
            r"\s+relabelled draws\s+0, 0, 0, 0 of 1000 per chain.*\nVerdict: ok",
        ),
    ],
    "05_extending_the_model": [
        Claim("with a fixed `kappa = 0.01`", r"kappa = Data\(0\.01\)", fresh=True),
        Claim(
            "moves no component mean by\nmore than a fraction of its posterior sd",
            r"largest shift of a component mean: ([\d.]+) posterior sd",
            check=_between(0.0, 0.5),
        ),
        Claim("Every convergence check ran on the new model", r"Verdict: ok"),
    ],
}


def _outputs(nb, skip_tag=None):
    """Per code cell: the concatenated text of its outputs (streams and text/plain)."""
    texts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        if skip_tag and skip_tag in cell.metadata.get("tags", []):
            texts.append(None)
            continue
        parts = []
        for out in cell.outputs:
            if out.output_type == "stream" and out.name == "stdout":
                parts.append(out.text)
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
        texts.append("\n".join(parts))
    return texts


# What a stored output must not show: library noise (tqdm's "IProgress not found" in a
# kernel without ipywidgets) and progress bars, text or widget.
NOISE = re.compile(
    r"TqdmWarning|IProgress not found|select_model \[[#.]+\]|\r|\d+%\|.*\||\d+it/s|it/s\]"
)


def _noise(nb):
    """(cell, snippet) of every output that shows a progress bar or library noise."""
    found = []
    code = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code, start=1):
        for out in cell.outputs:
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                found.append((i, "a widget (progress bar)"))
            text = out.get("text", "") if out.output_type == "stream" else ""
            text += str(data.get("text/plain", ""))
            match = NOISE.search(text)
            if match:
                found.append((i, text[max(match.start() - 40, 0) : match.end() + 40]))
    return found


def _narrative(nb):
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


def _check_claims(name, text, fresh_only=False):
    for claim in CLAIMS[name]:
        if fresh_only and not claim.fresh:
            continue
        match = re.search(claim.pattern, text)
        assert match, f"{name}: no output backs {claim.phrase!r} ({claim.pattern})"
        if claim.check is not None:
            assert claim.check(match), f"{name}: {claim.phrase!r} but the output says {match[0]!r}"


def _execute(path, tmp_path, fast):
    """Execute as ``examples/rerun.py`` does when it saves the stored outputs."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("rerun", EXAMPLES / "rerun.py")
    rerun = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rerun)
    return rerun.execute(path, tmp_path, fast=fast)


def test_the_notebooks_exist():
    assert [p.name for p in NOTEBOOKS] == [
        "01_quickstart.ipynb",
        "02_choosing_k.ipynb",
        "03_foot_sizes.ipynb",
        "04_iris.ipynb",
        "05_extending_the_model.ipynb",
    ]
    assert sorted(CLAIMS) == [p.stem for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_stored_with_outputs(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(c.execution_count for c in code), "execute and save the notebook"
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "run in order"
    errors = [o for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert images, "the stored notebook shows no figure"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_show_no_progress_bars_or_library_noise(path):
    assert not _noise(nbformat.read(path, as_version=4))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_narrative_numbers_come_from_outputs(path):
    nb = nbformat.read(path, as_version=4)
    narrative = _narrative(nb)
    for claim in CLAIMS[path.stem]:
        assert claim.phrase in narrative, f"the narrative no longer says {claim.phrase!r}"
    _check_claims(path.stem, "\n".join(t for t in _outputs(nb) if t))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes(path, tmp_path):
    start = time.perf_counter()
    fresh = _execute(path, tmp_path, fast=True)
    print(f"{path.name}: {time.perf_counter() - start:.1f} s")
    assert os.listdir(tmp_path) == []  # notebooks clean up after themselves
    assert not _noise(fresh), "a fresh run shows progress bars or library warnings"
    # What does not depend on the chains' length is exactly what is stored.
    stored = nbformat.read(path, as_version=4)
    for i, (old, new) in enumerate(
        zip(_outputs(stored, "full-run"), _outputs(fresh, "full-run"), strict=True)
    ):
        if old is not None:
            assert new == old, f"{path.name}, code cell {i + 1}: stored output is stale"
    _check_claims(path.stem, "\n".join(t for t in _outputs(fresh) if t), fresh_only=True)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_are_current(path, tmp_path):
    """Rerun with the stored settings (full chains): every output but timings is as stored."""
    fresh = _execute(path, tmp_path, fast=False)
    stored = nbformat.read(path, as_version=4)
    for i, (old, new) in enumerate(
        zip(_outputs(stored, "timing"), _outputs(fresh, "timing"), strict=True)
    ):
        if old is not None:
            # Warnings name the kernel's temporary file; the rest must be equal.
            clean = [re.sub(r"/tmp/ipykernel_\d+/\d+\.py:\d+", "", t) for t in (old, new)]
            assert clean[1] == clean[0], f"{path.name}, code cell {i + 1}: stale output"
    _check_claims(path.stem, "\n".join(t for t in _outputs(fresh) if t))
