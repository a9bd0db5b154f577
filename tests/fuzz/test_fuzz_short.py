"""The fuzz targets of fuzz/targets.py in short mode, for CI.

For every target: the seed corpus, every stored regression input, then random
inputs and mutations of the corpus (deterministic, pure Python, so this also runs on
PyPy and without atheris) for a few seconds. Any invariant violation or unexpected
exception fails the test and prints the input. Where atheris is installed, each
target also runs a short coverage-guided session through fuzz/run.py.

Long campaigns: see fuzz/README.md.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import random
import subprocess
import sys
import time
import types
from typing import Callable, Dict, List

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FUZZ = ROOT / "fuzz"

pytest.importorskip("hpack")


def _load_targets() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("puregrpc_fuzz_targets", FUZZ / "targets.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


targets = _load_targets()
TARGETS: Dict[str, Callable[[bytes], None]] = targets.TARGETS

# Seconds of random and mutated inputs per target (the seeds and regressions come on top).
SECONDS = float(os.environ.get("PUREGRPC_FUZZ_SECONDS", "5"))
MAX_INPUTS = 20000


def _files(folder: pathlib.Path) -> List[pathlib.Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


def _run(target: str, data: bytes, origin: str) -> None:
    try:
        TARGETS[target](data)
    except Exception as exc:
        raise AssertionError(
            f"fuzz target {target} failed on {origin}: {type(exc).__name__}: {exc}\n"
            f"input ({len(data)} bytes): {data.hex()}\n"
            f"store it under fuzz/regressions/{target}/ to keep it as a regression test"
        ) from exc


def _known_open_bug(exc: Exception) -> bool:
    """A violation listed in fuzz/suppressions.txt (its regression input is xfail here)."""
    path = FUZZ / "suppressions.txt"
    if not isinstance(exc, targets.InvariantViolation) or not path.exists():
        return False
    known = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    return any(text and text in str(exc) for text in known)


def _mutate(rng: random.Random, data: bytes, corpus: List[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(1 + rng.randrange(4)):
        op = rng.randrange(6)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:
            buf[min(pos, len(buf) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[pos:pos] = bytes(rng.getrandbits(8) for _ in range(rng.randrange(1, 9)))
        elif op == 2 and buf:
            del buf[pos : pos + rng.randrange(1, 17)]
        elif op == 3 and buf:
            buf[min(pos, len(buf) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF))
        elif op == 4 and buf:
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randrange(1, 33)]
        elif corpus:
            other = rng.choice(corpus)
            buf[pos:] = other[rng.randrange(len(other) + 1) :]
    return bytes(buf[:8192])


# Regression inputs of bugs found by fuzzing and not fixed yet, with the reason: they
# must still fail (strict xfail); once the bug is fixed, remove the entry here and the
# line in fuzz/suppressions.txt. Fixed so far: priority-self-dependency-on-idle-stream
# (PRIORITY error on an idle stream: RST_STREAM on an idle id, then HEADERS opened a
# stream remembered as reset).
OPEN_BUGS: Dict[str, str] = {
    # "regression-file-name": "what is wrong",
}


def _regressions() -> List[pytest.param]:  # type: ignore[valid-type]
    params = []
    for target in sorted(TARGETS):
        for path in _files(FUZZ / "regressions" / target):
            marks = [pytest.mark.xfail(reason=OPEN_BUGS[path.name], strict=True)] if path.name in OPEN_BUGS else []
            params.append(pytest.param(target, path, id=f"{target}/{path.name}", marks=marks))
    return params


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seed_corpus(target: str) -> None:
    seeds = _files(FUZZ / "corpus" / target)
    assert seeds, f"no seed corpus for {target}"
    for path in seeds:
        _run(target, path.read_bytes(), str(path.relative_to(ROOT)))


@pytest.mark.parametrize(("target", "path"), _regressions())
def test_regression(target: str, path: pathlib.Path) -> None:
    _run(target, path.read_bytes(), str(path.relative_to(ROOT)))


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_random_and_mutated_inputs(target: str) -> None:
    rng = random.Random(f"puregrpc-{target}")
    corpus = [p.read_bytes() for p in _files(FUZZ / "corpus" / target)]
    deadline = time.monotonic() + SECONDS
    count = 0
    while time.monotonic() < deadline and count < MAX_INPUTS:
        if count % 4 == 0 or not corpus:
            data = bytes(rng.getrandbits(8) for _ in range(rng.randrange(600)))
        else:
            data = _mutate(rng, rng.choice(corpus), corpus)
        try:
            TARGETS[target](data)
        except Exception as exc:
            if not _known_open_bug(exc):
                _run(target, data, f"generated input #{count}")  # fails with the input shown
        count += 1
    assert count > 0


def test_targets_catch_violations() -> None:
    """The harness can fail: a broken invariant is reported, not swallowed."""
    with pytest.raises(targets.InvariantViolation):
        targets.check(False, "deliberate")
    # A decoder state with a table size that does not add up is caught.
    from puregrpc._h2.hpack_decoder import Decoder

    decoder = Decoder(4096, 1 << 16)
    decoder.decode(b"\x40\x01a\x01b")  # one literal with incremental indexing
    decoder._table_size += 1
    with pytest.raises(targets.InvariantViolation):
        targets.check_decoder_state(decoder)


def test_atheris_session(tmp_path: pathlib.Path) -> None:
    """Coverage-guided fuzzing of every target for a few seconds, in one atheris
    process (fuzz/run.py's "all" target: byte 0 picks the target)."""
    pytest.importorskip("atheris")
    names = sorted(TARGETS)
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    for index, name in enumerate(names):
        for path in _files(FUZZ / "corpus" / name):
            (seeds / f"{name}-{path.name}").write_bytes(bytes([index]) + path.read_bytes())
    work = tmp_path / "corpus"
    work.mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "run.py"),
            "all",
            f"-max_total_time={int(SECONDS * 2)}",
            "-timeout=30",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
            str(work),
            str(seeds),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    tail = "\n".join(line for line in proc.stderr.splitlines()[-40:] if not line.startswith("INFO: Instrumenting"))
    assert proc.returncode == 0, f"atheris found a failure:\n{tail}"
    assert "DONE" in proc.stderr, tail
