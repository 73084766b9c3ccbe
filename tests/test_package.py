"""The package installs, imports, and its CLI and CI agree with the README."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

import neuralcodec
from neuralcodec.apps.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_version_and_layout():
    assert re.fullmatch(r"\d+\.\d+\.\d+", neuralcodec.__version__)
    for sub in ("transforms", "entropy", "codecs", "datasets", "apps", "weights"):
        assert (ROOT / "neuralcodec" / sub / "__init__.py").is_file(), sub


def test_error_types():
    assert issubclass(neuralcodec.BitstreamError, ValueError)
    with pytest.raises(neuralcodec.ModelNotFoundError, match="unknown model"):
        neuralcodec.load("no-such-model")


def test_cli_help_and_version(capsys):
    assert main(["--help"]) == 0
    assert "Usage: codec" in capsys.readouterr().out
    assert main(["--version"]) == 0
    assert neuralcodec.__version__ in capsys.readouterr().out


def test_cli_as_module():
    out = subprocess.run(
        [sys.executable, "-m", "neuralcodec", "--version"], capture_output=True, text=True, check=True
    )
    assert neuralcodec.__version__ in out.stdout


def test_ci_runs_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    commands = re.search(r"```bash\n(.*?)```", readme, re.S).group(1).strip().splitlines()
    assert len(commands) == 2, "the README opens with exactly two set-up commands"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines(), ".ci/run must run the README's test command verbatim"
