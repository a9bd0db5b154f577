"""Serve the demo on localhost:50051 until Ctrl+C: ``python -m puregrpc.demo [OPTIONS]``.

The same as ``puregrpc serve puregrpc.demo:register [OPTIONS]`` (``--port``,
``--address``, ... as there).
"""

from __future__ import annotations

import sys

from puregrpc.__main__ import main

if __name__ == "__main__":
    sys.exit(main(["serve", "puregrpc.demo:register", *sys.argv[1:]]))
