"""nginx as a real process (``nginx -c CONF -p DIR -e stderr -g 'daemon off;'``)."""

from __future__ import annotations

import os
import pathlib
import shutil
from typing import List, Optional, Sequence

from ._lb import Process, free_port, render, wait_listening


def nginx_binary() -> Optional[str]:
    """nginx on PATH, or where Debian installs it (/usr/sbin is not on every PATH)."""
    found = shutil.which("nginx")
    if found is None:
        candidate = pathlib.Path("/usr/sbin/nginx")
        if candidate.is_file() and os.access(candidate, os.X_OK):
            found = str(candidate)
    return found


class Nginx(Process):
    """nginx listening on ``self.port`` with the replicas on ``ports`` as its upstream."""

    def __init__(
        self,
        binary: str,
        workdir: pathlib.Path,
        ports: Sequence[int],
        *,
        keepalive: int = 0,
        max_fails: int = 1,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        lines = [f"        server 127.0.0.1:{port} max_fails={max_fails} fail_timeout=10s;" for port in ports]
        if keepalive:
            lines.append(f"        keepalive {keepalive};")
        config = render(
            "nginx.conf",
            workdir / "nginx.conf",
            # as root, nginx's worker would switch to "nobody", which cannot write here
            user="user root;" if os.geteuid() == 0 else "",
            workdir=workdir,
            upstream="\n".join(lines),
            listen_port=self.port,
        )
        argv = [binary, "-c", str(config), "-p", str(workdir), "-e", "stderr", "-g", "daemon off;"]
        super().__init__(argv, "nginx")
        try:
            wait_listening(self.port, self)
        except BaseException:
            self.close()
            raise

    def access_log(self) -> List[str]:
        path = self.workdir / "access.log"
        return path.read_text().splitlines() if path.exists() else []
