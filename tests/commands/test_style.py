"""The code stays as ruff formats and lints it (settings in pyproject.toml), so diffs show changes, not restyling."""

import shutil
import subprocess
import sys

import pytest

from repo_paths import REPO


@pytest.mark.skipif(
    shutil.which("ruff") is None
    and subprocess.run([sys.executable, "-m", "ruff", "--version"], capture_output=True).returncode != 0,
    reason="ruff is not installed (pip install -e '.[test]')",
)
@pytest.mark.parametrize("args", [["check", "."], ["format", "--check", "."]], ids=["lint", "format"])
def test_ruff(args):
    res = subprocess.run([sys.executable, "-m", "ruff", *args], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-1000:]
