"""Start N servers, print READY, then end the main thread (lifecycle.md 21).

``--end exit``: ``sys.exit(0)``; ``--end raise``: an uncaught exception.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import List

from _common import handler, say

import puregrpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--end", choices=("exit", "raise"), default="exit")
    args = parser.parse_args()
    began = time.monotonic()
    servers: List[puregrpc.Server] = []
    for _ in range(args.count):
        server = puregrpc.server(ThreadPoolExecutor(max_workers=1), handlers=[handler()])
        server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
    say("READY", args.count, f"{time.monotonic() - began:.3f}")
    if args.end == "raise":
        raise RuntimeError("boom: an exception in the main thread after start()")
    sys.exit(0)


if __name__ == "__main__":
    main()
