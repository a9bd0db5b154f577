"""Shared fixtures: protobuf code generated at test time, and a running server."""

from __future__ import annotations

import importlib
import os
import pathlib
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator

import pytest
from hypothesis import settings

# CI is a gate: PUREGRPC_HYPOTHESIS_PROFILE=ci (set by .ci/run) draws the same examples on
# every run, so a red CI means a change, not an unlucky draw. Runs without it stay random
# and keep exploring (a random draw once found a reserved key missing from a test's list).
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("PUREGRPC_HYPOTHESIS_PROFILE", "default"))

# The suite sends SIGINT to the servers it starts, and expects what a terminal's Ctrl+C
# gets. Started as a background job of a non-interactive shell, the test run inherits
# SIGINT ignored, and so would every process it starts (Python then installs no
# KeyboardInterrupt handler): a handler here is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

HERE = pathlib.Path(__file__).parent
_GENERATED = pathlib.Path(tempfile.mkdtemp(prefix="puregrpc-gen-"))


def generate(proto: pathlib.Path, include: pathlib.Path) -> None:
    """Run grpcio-tools' protoc on ``proto`` into the shared generated folder."""
    from grpc_tools import protoc

    args = [
        "protoc",
        f"-I{include}",
        f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={_GENERATED}",
        f"--grpc_python_out={_GENERATED}",
        str(proto),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {proto}")
    if str(_GENERATED) not in sys.path:
        sys.path.insert(0, str(_GENERATED))


@pytest.fixture(scope="session")
def echo_pb() -> Iterator[Any]:
    pytest.importorskip("grpc_tools")
    generate(HERE / "protos" / "echo_test.proto", HERE / "protos")
    yield importlib.import_module("echo_test_pb2"), importlib.import_module("echo_test_pb2_grpc")


@pytest.fixture()
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=16)
    yield executor
    executor.shutdown(wait=False)
