"""The bayes-gmm command line: input handling, exit codes, atomic results folders.

Most tests call ``main(argv)`` in-process (fast); one runs the installed console script.
"""

import argparse
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayes_gmm import cli
from bayes_gmm.datasets import load_faithful


def run(argv):
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("bayes-gmm: error: ")
    return lines[0]


@pytest.fixture
def csv(tmp_path):
    def write(text, name="data.csv"):
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("text", "expected"),
    [("3", [3]), ("1:4", [1, 2, 3, 4]), ("5,2,3,2", [2, 3, 5]), (" 2 : 3 ", [2, 3])],
)
def test_parse_k(text, expected):
    assert cli.parse_k(text) == expected


@pytest.mark.parametrize("text", ["a", "0", "3:1", "1:x", "", "0:3"])
def test_parse_k_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="invalid K"):
        cli.parse_k(text)


def test_parse_covariance_accepts_mclust_names():
    assert cli.parse_covariance("full,EEE,vii") == ("full", "tied", "spherical")
    assert cli.parse_covariance("all") == ("full", "tied", "diag", "spherical")
    with pytest.raises(argparse.ArgumentTypeError, match="invalid covariance structure 'banana'"):
        cli.parse_covariance("full,banana")


def test_usage_errors_exit_2():
    code, _, err = run(["select", "x.csv", "--k", "zero"])
    assert code == 2 and "invalid K" in err
    code, _, err = run(["fit", "x.csv", "--draws", "0"])
    assert code == 2 and "positive integer" in err
    code, _, err = run([])
    assert code == 2 and "required" in err


def test_help_and_version_exit_0():
    code, out, _ = run(["--help"])
    assert code == 0 and "demo" in out and "select" in out
    code, out, _ = run(["fit", "--help"])
    assert code == 0 and "--dropna" in out and "--overwrite" in out
    code, out, _ = run(["--version"])
    assert code == 0 and out.startswith("bayes-gmm ")


# --------------------------------------------------------------------------- data errors


def test_missing_file(tmp_path):
    code, out, err = run(["select", tmp_path / "nope.csv"])
    assert code == 1 and out == ""
    assert "nope.csv' not found" in one_line_error(err)


def test_folder_instead_of_file(tmp_path):
    code, _, err = run(["select", tmp_path])
    assert code == 1 and "is a folder" in one_line_error(err)


def test_empty_file(csv):
    code, _, err = run(["select", csv("")])
    assert code == 1 and "is empty" in one_line_error(err)


def test_header_only(csv):
    code, _, err = run(["select", csv("a,b\n")])
    assert code == 1 and "no data rows" in one_line_error(err)


def test_unreadable_csv(csv):
    path = csv('a,b\n1,2\n3,4,5,6\n"7,8\n')
    code, _, err = run(["select", path])
    assert code == 1 and "could not read" in one_line_error(err)


def test_binary_file(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"\xff\xfe\x00\x81\x00" * 50)
    code, _, err = run(["select", path])
    assert code == 1 and "could not read" in one_line_error(err)


def test_non_numeric_column_names_it_and_suggests_columns(csv):
    path = csv("x,species,y\n1,setosa,2\n2,virginica,3\n3,setosa,4\n")
    code, _, err = run(["select", path])
    line = one_line_error(err)
    assert code == 1
    assert "species" in line and "not numeric" in line
    assert "'setosa' in data row 1" in line
    assert "--columns x,y" in line


def test_stray_text_in_a_numeric_column(csv):
    path = csv("x,y\n1,2\n2,3\n3,oops\n4,5\n")
    code, _, err = run(["select", path])
    line = one_line_error(err)
    assert code == 1 and "column(s) y" in line and "'oops' in data row 3" in line


def test_unknown_column(csv):
    path = csv("x,y\n1,2\n2,3\n")
    code, _, err = run(["select", path, "--columns", "x,z"])
    line = one_line_error(err)
    assert code == 1 and "column(s) z not in" in line and "available: x, y" in line


def test_missing_values_count_rows_and_columns_and_offer_dropna(csv):
    path = csv("x,y,z\n1,,1\n2,3,1\n,NA,1\n4,5,1\n5,6,\n")
    code, _, err = run(["select", path])
    line = one_line_error(err)
    assert code == 1
    assert "3 of 5 rows" in line and "column(s) x, y, z" in line and "--dropna" in line


def test_read_data_dropna_and_columns(csv):
    path = csv("x,y,label\n1,,a\n2,3,b\n,4,c\n4,5,d\n")
    frame = cli.read_data(path, columns=["y", "x"], dropna=True)
    assert list(frame.columns) == ["y", "x"]
    np.testing.assert_array_equal(frame.to_numpy(), [[3.0, 2.0], [5.0, 4.0]])
    with pytest.raises(cli.CLIError, match="nothing left"):
        cli.read_data(csv("x,y\n1,\n,2\n", name="holes.csv"), dropna=True)


def test_infinite_values(csv):
    code, _, err = run(["select", csv("x,y\n1,2\ninf,3\n4,5\n")])
    assert code == 1 and "infinite" in one_line_error(err)


def test_too_few_rows_for_k(csv):
    path = csv("x,y\n1,2\n2,3\n3,5\n4,4\n")
    code, _, err = run(["select", path])  # default K = 1..9
    line = one_line_error(err)
    assert code == 1
    assert "4 rows, too few for K up to 9" in line and "--k 1:3" in line
    code, _, err = run(["fit", csv("x\n1\n", name="one.csv"), "--k", "1"])
    assert code == 1 and "too few to fit" in one_line_error(err)


def test_existing_output_folder_is_refused_before_any_work(csv, tmp_path, monkeypatch):
    path = csv("x,y\n" + "\n".join(f"{i},{i % 7}" for i in range(30)))
    out = tmp_path / "results"
    out.mkdir()
    (out / "keep.txt").write_text("precious")

    def boom(*args, **kwargs):  # the grid must not even start
        raise AssertionError("ran the grid")

    monkeypatch.setattr(cli, "_run_grid", boom)
    for command in ("select", "fit"):
        code, _, err = run([command, path, "--out", out])
        line = one_line_error(err)
        assert code == 1 and "already exists" in line and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "precious"


# --------------------------------------------------------------------------- results folder


def test_results_folder_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), cli.results_folder(target) as folder:
        (folder / "half.csv").write_text("1,2\n")
        raise RuntimeError("sampling failed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_results_folder_overwrite_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(cli.CLIError, match="already exists"), cli.results_folder(target):
        pass
    with pytest.raises(KeyboardInterrupt), cli.results_folder(target, overwrite=True) as f:
        (f / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with cli.results_folder(target, overwrite=True) as f:
        (f / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_results_folder_refuses_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(cli.CLIError, match="not a folder"), cli.results_folder(target, True):
        pass


def _console_script():
    script = Path(sys.executable).parent / "bayes-gmm"
    if not script.exists():
        pytest.skip("the bayes-gmm console script is not installed (pip install -e .)")
    return str(script)


def test_console_script_end_to_end_error(tmp_path):
    """The installed entry point: exit status and a single stderr line, no traceback."""
    faithful = tmp_path / "faithful.csv"
    frame = load_faithful()
    frame.loc[3, "waiting"] = np.nan
    frame.to_csv(faithful, index=False)
    proc = subprocess.run(
        [_console_script(), "select", str(faithful)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("bayes-gmm: error: 1 of 272 rows")
    assert "Traceback" not in proc.stderr
    assert pd.read_csv(faithful).shape == (272, 2)


# --------------------------------------------------------------------------- select


def test_select_prints_ranking_and_writes_results(tmp_path):
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)
    out = tmp_path / "sel"
    code, stdout, err = run(["select", data, "--k", "1:4", "--out", out, "--quiet"])
    assert code == 0, err
    assert err == ""  # --quiet: no progress
    assert "Chosen model: covariance_type='tied', n_components=3" in stdout
    assert "lower is better" in stdout
    table = pd.read_csv(out / "selection.csv")
    assert len(table) == 16  # 4 structures x K = 1..4
    best = table.loc[table["bic"].idxmin()]
    assert (best["covariance_type"], best["n_components"]) == ("tied", 3)
    assert best["bic"] == pytest.approx(2314.3, abs=0.05)
    assert (out / "selection.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faithful.csv", "sel"]


def test_select_leaves_the_callers_environment_alone(tmp_path, monkeypatch):
    monkeypatch.delenv("MPLBACKEND", raising=False)
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)
    code, _, err = run(["select", data, "--k", "2:3", "--out", tmp_path / "sel", "-q"])
    assert code == 0, err
    assert (tmp_path / "sel" / "selection.png").stat().st_size > 5_000
    assert "MPLBACKEND" not in os.environ


def test_select_progress_goes_to_stderr(tmp_path):
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)
    code, stdout, err = run(["select", data, "--k", "2", "--covariance", "EEE", "--seed", "3"])
    assert code == 0
    assert "selection grid" in err and "grid done" in err
    assert "selection grid" not in stdout


# --------------------------------------------------------------------------- fit and demo

FAST = ["--draws", "100", "--tune", "150", "--chains", "2", "--seed", "1"]


def test_fit_writes_every_result(tmp_path):
    from bayes_gmm import BayesianGaussianMixture

    frame = load_faithful()
    frame.insert(0, "id", np.arange(len(frame)))
    frame.insert(1, "note", "x")
    frame.loc[[5, 9], "waiting"] = np.nan
    data = tmp_path / "geyser.csv"
    frame.to_csv(data, index=False)
    argv = ["fit", data, "--columns", "eruptions,waiting", "--k", "2:3", "--dropna", *FAST]
    code, stdout, err = run(argv)
    assert code == 0, err
    out = tmp_path / "geyser_bayes_gmm"  # default: next to the data
    expected = {
        "selection.csv",
        "selection.png",
        "posterior.zarr",
        "summary.csv",
        "membership.csv",
        "diagnostics.txt",
        "clusters.png",
        "uncertainty.png",
        "trace.png",
        "rank.png",
        "forest.png",
    }
    assert {p.name for p in out.iterdir()} == expected
    for png in out.glob("*.png"):
        assert png.stat().st_size > 5_000, png.name
    assert "Chosen model: covariance_type='tied', n_components=3" in stdout
    assert "Posterior summary" in stdout and "Verdict: " in stdout
    assert "posterior: NUTS, 2 chains x (150 tune + 100 draws)" in err

    assert len(pd.read_csv(out / "selection.csv")) == 8  # 4 structures x K = 2, 3
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert {"weights[0]", "means[2, waiting]"} <= set(summary.index)
    membership = pd.read_csv(out / "membership.csv")
    assert len(membership) == 270  # two rows dropped
    assert list(membership.columns) == [
        "eruptions",
        "waiting",
        "component",
        "probability",
        "lower_90",
        "upper_90",
    ]
    assert membership["component"].between(0, 2).all()
    p = membership[["lower_90", "probability", "upper_90"]].to_numpy()
    # A posterior mean can sit outside an equal-tailed interval (skewed draws near 0 or 1),
    # so only the interval's order and the range are checked.
    assert np.all((0 <= p) & (p <= 1)) and np.all(p[:, 0] <= p[:, 2])
    assert np.all(p[:, 1] >= 1 / 3 - 1e-12)  # the most likely of three components

    model = BayesianGaussianMixture.load(out / "posterior.zarr")
    X = membership[["eruptions", "waiting"]].to_numpy()
    np.testing.assert_allclose(model.predict_proba(X).max(axis=1), membership["probability"])
    diag = model.diagnostics()
    text = (out / "diagnostics.txt").read_text()
    assert diag.verdict in text
    # Each failed check is reported once, as a "- problem" line of the diagnostics, and
    # not echoed again as a warning while sampling.
    assert diag.problems()  # 100 draws: the effective sample size is too small
    for problem in diag.problems():
        assert text.count(f"- {problem}") == 1
        assert stdout.count(f"- {problem}") == 1
        assert problem.split(":")[0] not in err
    assert "warning:" not in err


def test_fit_one_dimensional_draws_a_density(tmp_path):
    from bayes_gmm.datasets import make_foot_sizes

    X, _ = make_foot_sizes(140, 60, random_state=0)
    data = tmp_path / "feet.csv"
    pd.DataFrame({"foot_mm": X[:, 0]}).to_csv(data, index=False)
    out = tmp_path / "feet"
    code, stdout, err = run(["fit", data, "--k", "1:3", "--out", out, "--quiet", *FAST])
    assert code == 0, err
    assert err == ""
    names = {p.name for p in out.iterdir()}
    assert "density.png" in names and "clusters.png" not in names
    assert "n_components=2" in stdout


def test_failed_run_leaves_no_folder(tmp_path, monkeypatch):
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)

    def broken(*args, **kwargs):
        raise ValueError("sampler exploded\nsecond line")

    monkeypatch.setattr(cli, "_fit_posterior", broken)
    code, _, err = run(["fit", data, "--k", "2:3", "--out", tmp_path / "res", "-q", *FAST])
    assert code == 1
    assert one_line_error(err) == "bayes-gmm: error: sampler exploded"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["faithful.csv"]


def test_demo_end_to_end_via_console_script(tmp_path):
    """The README's main command, through the installed entry point, with short chains."""
    out = tmp_path / "demo"
    proc = subprocess.run(
        [_console_script(), "demo", "--out", str(out), *FAST],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Chosen model: covariance_type='tied', n_components=3" in proc.stdout
    assert "Verdict: " in proc.stdout
    assert (out / "clusters.png").stat().st_size > 20_000
    assert (out / "posterior.zarr").is_dir()
    assert "Old Faithful: 272 eruptions x (eruptions [min], waiting [min])" in proc.stderr
    # Second run: refuses to overwrite, then replaces with --overwrite.
    (out / "stale.txt").write_text("from an older run")
    again = subprocess.run(
        [_console_script(), "demo", "--out", str(out), *FAST], capture_output=True, text=True
    )
    assert again.returncode == 1 and "already exists" in again.stderr
    assert (out / "stale.txt").exists()
    first_summary = (out / "summary.csv").read_text()
    replaced = subprocess.run(
        [_console_script(), "demo", "--out", str(out), "--overwrite", "--quiet", *FAST],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert replaced.returncode == 0, replaced.stderr
    assert replaced.stderr == ""
    assert not (out / "stale.txt").exists()  # a new folder, not files written into the old
    assert (out / "clusters.png").stat().st_size > 20_000
    assert (out / "summary.csv").read_text() == first_summary  # same seed, same posterior
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no leftovers beside it
