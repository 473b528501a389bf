"""The repository stays clean and its README stays true."""

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_readme_python_examples_run(tmp_path, monkeypatch):
    """Every ```python block of the README, run in order in one namespace."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(blocks) >= 4
    monkeypatch.chdir(tmp_path)  # the examples save files
    namespace = {"__name__": "readme"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)
    assert namespace["selection"].best_params == ("EEE", 3)  # quoted in the README
    assert round(namespace["selection"].best_score, 1) == 2314.3
    assert namespace["four"].best_params == ("tied", 3)
    assert (tmp_path / "faithful.zarr").exists()


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = [
        line
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    # Only shell plumbing besides the one command, and no environment of its own.
    assert commands[:2] == ["set -euo pipefail", 'cd "$(dirname "$0")/.."']
    assert len(commands) == 3
    assert f"\n{commands[2]}\n" in readme
    assert os.access(ROOT / ".ci" / "run", os.X_OK)
