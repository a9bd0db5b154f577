"""Drop the last reference to a started server and measure when new connections
are refused (lifecycle.md 19).

Protocol on stdin/stdout: prints ``READY <port> <tid>``; on the line ``drop``
it deletes the server, then prints ``COLLECTED <bool>`` (whether a weakref to
it died at once), ``REFUSED <ms>`` (time from the ``del`` to the first refused
TCP connect, probed every millisecond up to 1 s; ``REFUSED never`` if not) and
``THREADS <name>,...`` (the threads alive); on ``exit`` it exits.
"""

from __future__ import annotations

import socket
import sys
import threading
import time
import weakref

from _common import make_server, ready, say


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except (ConnectionRefusedError, ConnectionResetError):
        # Reset: the connect landed in the backlog of a listener closing at that moment.
        return True
    return False


def main() -> None:
    server, port = make_server()
    server.start()
    alive = weakref.ref(server)
    ready(port)
    for line in sys.stdin:
        command = line.strip()
        if command == "drop":
            began = time.monotonic()
            del server
            collected = alive() is None
            refused_at = None
            while time.monotonic() - began < 1.0:
                if refused(port):
                    refused_at = time.monotonic() - began
                    break
                time.sleep(0.001)
            say("COLLECTED", collected)
            say("REFUSED", "never" if refused_at is None else f"{refused_at * 1000:.2f}")
            say("THREADS", ",".join(sorted(t.name for t in threading.enumerate())))
        elif command == "exit":
            return


if __name__ == "__main__":
    main()
