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

from bayes_gmm import _cli_fitting, cli
from bayes_gmm._cli_fitting import failed_cells_text, posterior_choice
from bayes_gmm._cli_folder import check_output, results_folder
from bayes_gmm._cli_report import CLIError, Reporter
from bayes_gmm.datasets import load_faithful
from bayes_gmm.structures import MCLUST_MODELS


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
    # Each name as the library spells it, so that the table names it as the user did.
    assert cli.parse_covariance("FULL,EEE,vii") == ("full", "EEE", "VII")
    assert cli.parse_covariance("vev, EVE,VEV") == ("VEV", "EVE")
    assert cli.parse_covariance("ALL") == MCLUST_MODELS  # as the default grid
    with pytest.raises(argparse.ArgumentTypeError, match="invalid covariance structure 'banana'"):
        cli.parse_covariance("full,banana")


def test_select_runs_mclust_models(tmp_path):
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)
    argv = ["select", data, "--covariance", "VEV,eee,EVI", "--k", "2:3", "-q"]
    code, out, err = run([*argv, "--out", tmp_path / "sel"])
    assert code == 0, err
    assert "Chosen model: covariance_type='EEE', n_components=3" in out
    table = pd.read_csv(tmp_path / "sel" / "selection.csv")
    assert sorted(table["covariance_type"].unique()) == ["EEE", "EVI", "VEV"]
    assert table["bic"].notna().all()


def test_fit_refuses_structures_without_a_posterior_before_the_grid(csv, monkeypatch):
    from bayes_gmm.structures import get_structure

    path = csv("x,y\n" + "\n".join(f"{i},{i % 7}" for i in range(30)))
    unsupported = [t for t in ("VEV", "EVE", "VVE") if not get_structure(t).posterior_supported]
    if not unsupported:
        pytest.skip("every structure has a posterior now")

    def boom(*args, **kwargs):
        raise AssertionError("ran the grid")

    monkeypatch.setattr(cli, "run_grid", boom)
    code, _, err = run(["fit", path, "--covariance", ",".join(unsupported)])
    line = one_line_error(err)
    assert code == 1 and "none of --covariance" in line and "bayes-gmm select" in line


def test_fit_samples_the_best_structure_with_a_posterior():
    from bayes_gmm.selection import ModelSelection
    from bayes_gmm.structures import get_structure

    if get_structure("VEV").posterior_supported:
        pytest.skip("VEV has a posterior now")
    table = pd.DataFrame(
        {
            "covariance_type": ["VEV", "tied", "full", "tied"],
            "n_components": [2, 3, 2, 1],
            "bic": [100.0, 105.0, np.nan, 300.0],
        }
    )
    out = io.StringIO()
    rep = Reporter(True, stdout=out, stderr=io.StringIO())
    sel = ModelSelection(table, "bic", {("VEV", 2): None}, n_samples=50, n_features=2)
    assert posterior_choice(sel, ("VEV", 2), "bic", rep) == ("tied", 3)
    assert "sampling the best supported model, tied with K = 3 (BIC 105.00)" in out.getvalue()
    assert posterior_choice(sel, ("full", 2), "bic", rep) == ("full", 2)


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
    assert (
        code == 0 and "--dropna" in out and "--missing {error,em}" in out and "--overwrite" in out
    )
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


def test_suggested_columns_can_be_pasted_into_a_shell(csv):
    import shlex

    body = "\n".join(f"{i},{(i * 7) % 5},{'ab'[i % 2]}" for i in range(12))
    path = csv("sepal length (cm),sepal width (cm),species\n" + body)
    code, _, err = run(["select", path])
    line = one_line_error(err)
    assert code == 1
    suggestion = line.split("choose numeric columns with ")[1]
    assert suggestion == "--columns 'sepal length (cm),sepal width (cm)'"
    # What the shell hands over is what --columns parses into the numeric columns.
    argv = shlex.split(suggestion)
    code, _, err = run(["select", path, *argv, "--k", "1", "-q"])
    assert code == 0, err


def test_semicolon_separated_file_is_read(csv):
    rng = np.random.default_rng(0)
    rows = rng.normal(size=(40, 2)) + np.repeat([[0, 0], [6, 6]], 20, axis=0)
    text = "a;b\n" + "\n".join(f"{x:.3f};{y:.3f}" for x, y in rows)
    frame = cli.read_data(csv(text))
    assert list(frame.columns) == ["a", "b"]
    np.testing.assert_allclose(frame.to_numpy(), rows, atol=5e-4)
    assert frame.attrs["delimiter"] == ";"
    # European style: semicolons between fields, a comma for the decimals.
    euro = "a;b\n" + "\n".join(f"{x:.3f};{y:.3f}".replace(".", ",") for x, y in rows)
    np.testing.assert_allclose(cli.read_data(csv(euro, "euro.csv")).to_numpy(), rows, atol=5e-4)
    code, out, err = run(["select", csv(text, "semi.csv"), "--k", "1:3", "-q"])
    assert code == 0, err
    assert "n_components=2" in out


def test_undetected_delimiter_is_named_in_the_error(csv):
    # One column only, so nothing to sniff between: the values show the semicolon.
    path = csv("a;species\n2;setosa\n3;virginica\n")
    code, _, err = run(["select", path])
    line = one_line_error(err)
    assert code == 1
    assert "species" in line and "not numeric" in line  # the sniffed file, column by column
    path = csv("x\n2;5\n3;4\n4;1\n", "one.csv")
    line = one_line_error(run(["select", path])[2])
    assert "semicolon-separated" in line


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


def test_missing_values_count_rows_and_columns_and_offer_both_options(csv):
    path = csv("x,y,z\n1,,1\n2,3,1\n,NA,1\n4,5,1\n5,6,\n")
    code, _, err = run(["select", path])
    line = one_line_error(err)
    assert code == 1
    assert "3 of 5 rows" in line and "column(s) x, y, z" in line
    assert "--missing em" in line and "--dropna" in line


def test_select_missing_em_equals_the_library(tmp_path):
    from bayes_gmm import select_model

    frame = load_faithful()
    rng = np.random.default_rng(3)
    holes = rng.random(frame.shape) < 0.1  # about 10% of the values missing
    holes[:, 1] &= ~holes[:, 0]  # no row entirely missing
    frame = frame.mask(holes)
    data = tmp_path / "holes.csv"
    frame.to_csv(data, index=False)
    out = tmp_path / "sel"
    argv = ["select", data, "--k", "2:3", "--covariance", "tied", "--missing", "em"]
    code, stdout, err = run([*argv, "--out", out])
    assert code == 0, err
    assert f"{int(frame.isna().any(axis=1).sum())} row(s) with missing values" in err
    expected = select_model(
        frame,
        n_components=[2, 3],
        covariance_types=["tied"],
        random_state=0,
        missing="em",
        verbose=False,
    )
    table = pd.read_csv(out / "selection.csv")
    np.testing.assert_allclose(table["bic"], expected.table["bic"], rtol=1e-12)
    assert "Chosen model: covariance_type='tied', n_components=3" in stdout


def test_fit_missing_em_keeps_every_row(tmp_path):
    frame = load_faithful()
    rng = np.random.default_rng(4)
    holes = rng.random(frame.shape) < 0.1
    holes[:, 1] &= ~holes[:, 0]
    frame = frame.mask(holes)
    data = tmp_path / "holes.csv"
    frame.to_csv(data, index=False)
    argv = ["fit", data, "--k", "3", "--covariance", "tied", "--missing", "em", *FAST]
    code, stdout, err = run([*argv, "--out", tmp_path / "out"])
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "membership.csv")
    assert len(table) == len(frame)  # no row dropped
    np.testing.assert_array_equal(table[frame.columns].isna(), frame.isna())
    assert table["mean_probability"].between(1 / 3, 1).all()
    assert (tmp_path / "out" / "clusters.png").stat().st_size > 5_000
    assert "Posterior summary" in stdout


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "x,y\n1,\n,\n3,4\n",
            "1 row\\(s\\) of .* have every value missing \\(data row\\(s\\) 2\\)",
        ),
        (
            "x,y,z\n1,,1\n2,,3\n",
            "column\\(s\\) y of .* have no value at all; leave it out with --columns x,z",
        ),
        ("x,y\n1,inf\n,2\n", "column\\(s\\) y of .* contain infinite values"),
    ],
)
def test_missing_em_refuses_what_it_cannot_use(csv, text, message):
    with pytest.raises(CLIError, match=message):
        cli.read_data(csv(text), missing="em")


def test_missing_em_and_dropna_exclude_each_other(csv):
    code, _, err = run(["select", csv("x,y\n1,2\n"), "--dropna", "--missing", "em"])
    assert code == 2 and "not allowed with argument" in err


def test_read_data_dropna_and_columns(csv):
    path = csv("x,y,label\n1,,a\n2,3,b\n,4,c\n4,5,d\n")
    frame = cli.read_data(path, columns=["y", "x"], dropna=True)
    assert list(frame.columns) == ["y", "x"]
    np.testing.assert_array_equal(frame.to_numpy(), [[3.0, 2.0], [5.0, 4.0]])
    with pytest.raises(CLIError, match="nothing left"):
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

    monkeypatch.setattr(cli, "run_grid", boom)
    for command in ("select", "fit"):
        code, _, err = run([command, path, "--out", out])
        line = one_line_error(err)
        assert code == 1 and "already exists" in line and "--overwrite" in line
    assert (out / "keep.txt").read_text() == "precious"


@pytest.mark.parametrize("where", ["file", "below_file", "proc"])
def test_unwritable_output_is_refused_before_any_work(csv, tmp_path, monkeypatch, where):
    path = csv("x,y\n" + "\n".join(f"{i},{i % 7}" for i in range(30)))
    blocker = tmp_path / "results.txt"
    blocker.write_text("precious")
    out = {
        "file": blocker,
        "below_file": blocker / "sub" / "results",
        "proc": Path("/proc/nope"),
    }[where]
    if where == "proc" and not Path("/proc").is_dir():
        pytest.skip("no /proc on this system")

    def boom(*args, **kwargs):
        raise AssertionError("ran the grid")

    monkeypatch.setattr(cli, "run_grid", boom)
    for command in ("select", "fit"):
        code, _, err = run([command, path, "--out", out])
        line = one_line_error(err)
        assert code == 1 and "--out" in line
    assert blocker.read_text() == "precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.csv", "results.txt"]


def test_check_output_leaves_nothing_behind(tmp_path):
    check_output(tmp_path / "new" / "deeper" / "results")
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- grid messages


def test_constant_column_warning_is_one_line_naming_the_column(csv):
    rng = np.random.default_rng(1)
    x = np.r_[rng.normal(0, 1, 20), rng.normal(8, 1, 20)]
    path = csv("x,flat\n" + "\n".join(f"{v:.4f},5" for v in x))
    code, out, err = run(["select", path, "--k", "1:2", "--covariance", "diag"])
    # Each cell is degenerate (the likelihood grows without bound in the flat column):
    # the run says so and why, instead of ranking meaningless numbers.
    assert code == 1 and "2 of 2 cells of the grid failed" in out
    lines = [line for line in err.splitlines() if "warning:" in line]
    assert len(lines) == 1, err
    assert lines[0].startswith("bayes-gmm: warning: Column(s) ['flat'] of X are constant")
    assert ".py:" not in err  # no library source line


def test_failed_cells_are_counted_with_their_reasons(csv):
    rows = ["1.0,2.0", "3.0,1.0", "5.0,7.0"] * 10  # 3 distinct rows, 30 rows
    path = csv("a,b\n" + "\n".join(rows))
    code, out, err = run(["select", path, "-q"])
    import re

    table_text = out

    match = re.search(r"(\d+) of (\d+) cells of the grid failed:", table_text)
    assert match, out
    n_failed, n_cells = map(int, match.groups())
    assert n_cells == 126 and n_failed >= 84  # K = 4..9 cannot have a point per component
    assert "  K=4..9 x mclust's 14 models: K exceeds the number of distinct" in out
    reasons = [line for line in table_text.splitlines() if line.startswith("  ")]
    assert 1 <= len(reasons) <= 6
    if code == 1:  # every cell failed: the error points to the reasons above
        assert "reasons are listed above" in one_line_error(err)


def test_failed_cells_text_groups_reasons():
    import types

    table = pd.DataFrame(
        {
            "covariance_type": ["full", "tied", "full", "tied", "full"],
            "n_components": [1, 1, 2, 2, 3],
            "bic": [10.0, np.nan, np.nan, np.nan, np.nan],
            "reason": ["", "singular", "empty", "empty", "empty"],
        }
    )
    sel = types.SimpleNamespace(table=table, criterion="bic")
    text = failed_cells_text(sel)
    assert text.splitlines() == [
        "4 of 5 cells of the grid failed:",
        "  full K=2, tied K=2, full K=3: empty",
        "  tied K=1: singular",
    ]
    # Reasons that differ only in K are one, and a full block of cells is named as one.
    table["reason"] = ["K=1 too big", "K=1 too big", "K=2 too big", "K=2 too big", ""]
    table["bic"] = [np.nan] * 4 + [1.0]
    assert failed_cells_text(sel).splitlines()[1] == "  K=1,2 x full, tied: K too big"
    table["bic"] = 1.0
    assert failed_cells_text(sel) == ""


def test_prior_is_named_conjugate_and_the_old_name_still_works(tmp_path, monkeypatch):
    seen = []
    real = _cli_fitting._prior

    def spy(name, rep):
        prior = real(name, rep)
        seen.append(prior)
        return prior

    monkeypatch.setattr(_cli_fitting, "_prior", spy)
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)
    code, _, err = run(["select", data, "--k", "2", "--covariance", "tied", "--prior", "conjugate"])
    assert code == 0, err
    assert "deprecated" not in err
    code, _, err = run(["select", data, "--k", "2", "--covariance", "tied", "--prior", "default"])
    assert code == 0, err
    assert "bayes-gmm: warning: --prior default is deprecated" in err
    assert "--prior conjugate" in err
    code, _, err = run(["select", data, "--k", "2", "--covariance", "VEI", "--prior", "mclust"])
    assert code == 0, err
    assert [type(p).__name__ for p in seen] == ["GaussianMixturePrior"] * 3
    assert [p.diagonal_scale for p in seen] == ["per_column", "per_column", "mean"]
    code, _, err = run(["select", data, "--prior", "flat"])
    assert code == 2 and "'conjugate'" in err and "'mclust'" in err
    code, out, _ = run(["select", "--help"])
    assert "{none,conjugate,mclust}" in out


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bars_only_on_a_terminal(tmp_path, monkeypatch):
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)
    assert Reporter(False, stderr=_Terminal()).bars
    assert not Reporter(True, stderr=_Terminal()).bars
    assert not Reporter(False, stderr=io.StringIO()).bars
    # Into a file (not a terminal): progress lines, but no bar and no kernel note.
    code, _, err = run(["select", data, "--k", "1:3"])
    assert code == 0
    assert "\r" not in err and "select_model [" not in err
    assert "loading the compiled EM kernel" not in err
    assert "selection grid" in err


# --------------------------------------------------------------------------- results folder


def test_results_folder_is_atomic_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), results_folder(target) as folder:
        (folder / "half.csv").write_text("1,2\n")
        raise RuntimeError("sampling failed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_results_folder_overwrite_replaces_only_on_success(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(CLIError, match="already exists"), results_folder(target):
        pass
    with pytest.raises(KeyboardInterrupt), results_folder(target, overwrite=True) as f:
        (f / "new.txt").write_text("new")
        raise KeyboardInterrupt
    assert sorted(p.name for p in target.iterdir()) == ["old.txt"]
    with results_folder(target, overwrite=True) as f:
        (f / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_results_folder_refuses_a_file(tmp_path):
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(CLIError, match="not a folder"), results_folder(target, True):
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
    assert "Chosen model: covariance_type='EEE', n_components=3" in stdout
    assert "lower is better" in stdout
    table = pd.read_csv(out / "selection.csv")
    assert len(table) == 56  # mclust's 14 models x K = 1..4
    assert list(dict.fromkeys(table["covariance_type"])) == list(MCLUST_MODELS)
    best = table.loc[table["bic"].idxmin()]
    assert (best["covariance_type"], best["n_components"]) == ("EEE", 3)
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
        "README.txt",
    }
    assert {p.name for p in out.iterdir()} == expected
    readme = (out / "README.txt").read_text()
    for name in expected - {"README.txt"}:  # every file is explained
        assert f"\n{name} " in readme, name
    for png in out.glob("*.png"):
        assert png.stat().st_size > 5_000, png.name
    assert "Chosen model: covariance_type='EEE', n_components=3" in stdout
    assert "Posterior summary" in stdout and stdout.count("Verdict: ") == 1
    assert "posterior: NUTS, 2 chains x (150 tune + 100 draws)" in err

    assert len(pd.read_csv(out / "selection.csv")) == 28  # 14 models x K = 2, 3
    summary = pd.read_csv(out / "summary.csv", index_col=0)
    assert {"weights[0]", "means[2, waiting]"} <= set(summary.index)
    # Each covariance entry once: tied, 2 features -> 3 entries of the shared matrix.
    covariances = [name for name in summary.index if name.startswith("covariances")]
    assert len(covariances) == 3, covariances
    assert len(summary) == 3 + 6 + 3
    membership = pd.read_csv(out / "membership.csv")
    assert len(membership) == 270  # two rows dropped
    assert list(membership.columns) == [
        "eruptions",
        "waiting",
        "component",
        "mean_probability",
        "lower_90",
        "upper_90",
    ]
    assert membership["component"].between(0, 2).all()
    p = membership[["lower_90", "mean_probability", "upper_90"]].to_numpy()
    # A posterior mean can sit outside an equal-tailed interval (skewed draws near 0 or 1),
    # so only the interval's order and the range are checked.
    assert np.all((0 <= p) & (p <= 1)) and np.all(p[:, 0] <= p[:, 2])
    assert np.all(p[:, 1] >= 1 / 3 - 1e-12)  # the most likely of three components

    model = BayesianGaussianMixture.load(out / "posterior.zarr")
    X = membership[["eruptions", "waiting"]].to_numpy()
    np.testing.assert_allclose(model.predict_proba(X).max(axis=1), membership["mean_probability"])
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


def test_fit_one_dimensional_draws_a_density(tmp_path, monkeypatch):
    from bayes_gmm import plots
    from bayes_gmm.datasets import make_foot_sizes

    X, _ = make_foot_sizes(140, 60, random_state=0)
    data = tmp_path / "feet.csv"
    pd.DataFrame({"foot_mm": X[:, 0]}).to_csv(data, index=False)
    out = tmp_path / "feet"
    seen_xlabels = []
    real = plots.plot_density

    def spy(*args, **kwargs):
        ax = real(*args, **kwargs)
        seen_xlabels.append(ax.get_xlabel())
        return ax

    monkeypatch.setattr(plots, "plot_density", spy)
    code, stdout, err = run(["fit", data, "--k", "1:3", "--out", out, "--quiet", *FAST])
    assert code == 0, err
    assert err == ""
    names = {p.name for p in out.iterdir()}
    assert "density.png" in names and "clusters.png" not in names
    assert "n_components=2" in stdout
    assert seen_xlabels == ["foot_mm"]  # the column's name, not x0


def test_failed_run_leaves_no_folder(tmp_path, monkeypatch):
    data = tmp_path / "faithful.csv"
    load_faithful().to_csv(data, index=False)

    def broken(*args, **kwargs):
        raise ValueError("sampler exploded\nsecond line")

    monkeypatch.setattr(cli, "fit_posterior", broken)
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
    assert "Chosen model: covariance_type='EEE', n_components=3" in proc.stdout
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
