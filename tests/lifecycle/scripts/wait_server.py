"""A server whose main thread blocks in ``wait_for_termination()`` until Ctrl+C.

``--on-interrupt exit1``: ``except KeyboardInterrupt: sys.exit(1)``;
``--on-interrupt raise``: the KeyboardInterrupt ends the script uncaught.
Prints ``INTERRUPTED`` when the KeyboardInterrupt comes out of the wait.
"""

from __future__ import annotations

import argparse
import sys

from _common import make_server, ready, say


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--on-interrupt", choices=("exit1", "raise"), default="exit1")
    args = parser.parse_args()
    server, port = make_server()
    server.start()
    ready(port)
    try:
        server.wait_for_termination()
    except KeyboardInterrupt:
        say("INTERRUPTED")
        if args.on_interrupt == "exit1":
            sys.exit(1)
        raise
    say("TERMINATED")


if __name__ == "__main__":
    main()
