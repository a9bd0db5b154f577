"""A started server that loses its last reference drains itself (lifecycle.md 19).

``scripts/gc_server.py`` deletes its only reference to a started server while an
RPC is in flight and measures, in the same process, how long until a new TCP
connect is refused; then it lists its threads.
"""

from __future__ import annotations

import grpc

from ._proc import Rpc, ServerProcess, new_channel

# Threads the script may have: the main thread, puregrpc's I/O thread, the
# add_callback/drain-listener thread, and the handler pool's workers.
KNOWN_THREADS = {"MainThread", "puregrpc-io", "puregrpc-callbacks"}


def test_dropping_the_last_reference_refuses_connections_within_100ms() -> None:
    with ServerProcess.script("gc_server.py", stdin=True) as server:
        port, _ = server.ready()
        assert server.proc.stdin is not None
        with new_channel(port) as channel:
            in_flight = Rpc(channel, "Sleep", b"0.5")
            server.expect("HANDLER Sleep", 5.0)
            server.proc.stdin.write("drop\n")
            server.proc.stdin.flush()
            _, collected = server.expect("COLLECTED", 5.0)
            _, refused = server.expect("REFUSED", 5.0)
            _, threads = server.expect("THREADS", 5.0)
            # The RPC in flight when the reference went still finishes.
            status = in_flight.code()
            late = Rpc(channel, "Echo", b"late")
            late_status = late.code(5.0)
        server.proc.stdin.write("exit\n")
        server.proc.stdin.flush()
        assert server.wait_exit(10.0) == 0, server.describe()
    figure = refused.split()[1]
    names = set(threads.split()[1].split(","))
    print(f"\nGC: {collected}; new TCP connect refused {figure} ms after del; threads {sorted(names)}")
    assert collected == "COLLECTED True", "the server was not freed when its last reference went"
    assert figure != "never", "connections were still accepted 1 s after the server was dropped"
    assert float(figure) < 100.0, f"refused only {figure} ms after del (spec: 100 ms)"
    unknown = {name for name in names if name not in KNOWN_THREADS and not name.startswith("handler")}
    assert not unknown, f"unexpected threads (a poller?): {sorted(unknown)}"
    assert status == grpc.StatusCode.OK, in_flight.details()
    assert late_status == grpc.StatusCode.UNAVAILABLE, late.details()
