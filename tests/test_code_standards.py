"""The project's code standards, checked as part of the suite: ruff's lint and format,
and mypy --strict over the package, the benchmarks and the fuzz targets.

Each needs the ``dev`` extra (``scripts/test`` installs it); without it the check skips.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from typing import List

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CODE = ["src", "tests", "bench", "fuzz"]


def run_tool(module: str, args: List[str]) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} not installed (the dev extra)")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def test_ruff_lint() -> None:
    proc = run_tool("ruff", ["check", "--no-cache", *CODE])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_ruff_format() -> None:
    proc = run_tool("ruff", ["format", "--check", "--no-cache", *CODE])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


# bench/ and fuzz/ each hold a run.py (top-level modules, not packages): one mypy run each.
@pytest.mark.parametrize("paths", [[], ["bench"], ["fuzz"]], ids=["src", "bench", "fuzz"])
def test_mypy_strict(paths: List[str]) -> None:
    """The configuration (pyproject.toml) is strict; with no paths, it checks src/puregrpc."""
    proc = run_tool("mypy", ["--no-incremental", *paths])
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
