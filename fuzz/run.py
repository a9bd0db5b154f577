"""Run one fuzz target under atheris (coverage-guided, libFuzzer options pass through).

    python fuzz/run.py TARGET [libFuzzer options] [CORPUS_DIR ...]

e.g. ``python fuzz/run.py h2_frames -max_total_time=600 fuzz/work/h2_frames fuzz/corpus/h2_frames``.
Targets: see ``fuzz/targets.py`` (``TARGETS``).
"""

from __future__ import annotations

import os
import sys
from typing import Callable, List

import atheris

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

# Coverage is collected for the code under test and for the hpack package it builds on.
with atheris.instrument_imports(include=["puregrpc", "hpack"]):
    import hpack  # noqa: F401

    import puregrpc._h2.connection
    import puregrpc._protocol  # noqa: F401

import targets  # noqa: E402

NAMES = sorted(targets.TARGETS)

# Known open bugs, one substring of the InvariantViolation message per line (# comments):
# a long campaign reads them so that it goes on past a bug already reported. The
# regression inputs under fuzz/regressions/ still fail until the bug is fixed.
SUPPRESSIONS_FILE = os.path.join(HERE, "suppressions.txt")


def _suppressions() -> List[str]:
    if os.environ.get("PUREGRPC_FUZZ_NO_SUPPRESSIONS") or not os.path.exists(SUPPRESSIONS_FILE):
        return []
    with open(SUPPRESSIONS_FILE, encoding="utf-8") as f:
        lines = (line.split("#", 1)[0].strip() for line in f)
        return [line for line in lines if line]


def suppressed(target: Callable[[bytes], None]) -> Callable[[bytes], None]:
    known = _suppressions()
    if not known:
        return target

    def run(data: bytes) -> None:
        try:
            target(data)
        except targets.InvariantViolation as exc:
            if not any(text in str(exc) for text in known):
                raise

    return run


def every_target(data: bytes) -> None:
    """Target "all": byte 0 picks the target, the rest is its input (one process for
    a short run of all of them)."""
    if data:
        targets.TARGETS[NAMES[data[0] % len(NAMES)]](data[1:])


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in (*targets.TARGETS, "all"):
        sys.exit(f"usage: run.py TARGET [libFuzzer options]; targets: {', '.join(NAMES)}, all")
    target = suppressed(every_target if sys.argv[1] == "all" else targets.TARGETS[sys.argv[1]])
    # libFuzzer runs argv[0] through the shell for -merge and -fork: make it the full
    # command that gets back here, with this interpreter and target.
    command = f"{sys.executable} {os.path.abspath(__file__)} {sys.argv[1]}"
    atheris.Setup([command, *sys.argv[2:]], target)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
