"""Serve the demo on localhost:50051 until Ctrl+C: ``python -m puregrpc.demo``."""

from __future__ import annotations

import argparse
import logging
from concurrent.futures import ThreadPoolExecutor

import puregrpc
from puregrpc.demo import register


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="localhost:50051")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    server = puregrpc.server(ThreadPoolExecutor(max_workers=10))
    register(server)
    port = server.add_insecure_port(args.address)
    server.start()
    logging.info("demo serving on port %d; Ctrl+C to stop", port)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        server.stop(5).wait()


if __name__ == "__main__":
    main()
