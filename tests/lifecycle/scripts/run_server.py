"""A server served by ``puregrpc.run(server, grace, drain_delay)`` in the main thread.

Prints ``DRAINING`` when the drain begins (a drain listener), ``RETURNED`` once
``run()`` has returned, then exits with code 0.
"""

from __future__ import annotations

import argparse
import sys

from _common import make_server, ready, say

import puregrpc


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--grace", type=float, default=5.0)
    parser.add_argument("--drain-delay", type=float, default=0.0)
    args = parser.parse_args()
    server, port = make_server()
    server.add_drain_listener(lambda: say("DRAINING"))
    server.start()
    ready(port)
    puregrpc.run(server, grace=args.grace, drain_delay=args.drain_delay)
    say("RETURNED")
    sys.exit(0)


if __name__ == "__main__":
    main()
