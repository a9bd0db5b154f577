"""The interop cases with a Node.js client (@grpc/grpc-js), a second, independent
HTTP/2 and gRPC implementation, against puregrpc's interop server.

Needs ``node`` and ``npm ci`` run in ``interop/node`` (.ci/run does both).
Skipped only when node is absent; with node but no installed modules, it fails.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import subprocess
from typing import Any, Dict

import pytest

from puregrpc.interop import file_descriptor_set

from . import grpcio_cases
from .conftest import Interop

NODE_DIR = pathlib.Path(__file__).resolve().parents[2] / "interop" / "node"
CASES = sorted([*grpcio_cases.CASES, "channel_soak"])


@pytest.fixture(scope="module")
def node_results(interop_server: Interop, tmp_path_factory: Any) -> Dict[str, dict]:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Node.js interop client cannot run")
    if not (NODE_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail(f"@grpc/grpc-js is not installed: run `npm ci` in {NODE_DIR}")
    # The schema the server serves (built in code), so no .proto files are needed.
    descriptor_set = tmp_path_factory.mktemp("node") / "interop.pb"
    descriptor_set.write_bytes(file_descriptor_set().SerializeToString())
    proc = subprocess.run(
        [
            node,
            str(NODE_DIR / "interop_client.js"),
            f"--server_port={interop_server.port}",
            "--server_host=localhost",
            f"--test_cases={','.join(CASES)}",
            f"--descriptor_set={descriptor_set}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["case"]] = entry
    if not results:
        pytest.fail(f"the Node.js client printed no results:\n{proc.stdout}\n{proc.stderr}")
    return results


@pytest.mark.parametrize("case", CASES)
def test_node_interop_case(case: str, node_results: Dict[str, dict]) -> None:
    entry = node_results.get(case)
    assert entry is not None, f"{case} did not run"
    assert entry["ok"], entry.get("error")
