"""Exits and forks with puregrpc's daemon threads (the I/O thread, the callback thread).

Default: a server whose drain listener sleeps 0.5 s, then prints ``LISTENER``; the main
thread stops the server, prints ``STOPPED`` and exits at once. ``--hung``: the
listener never returns (it prints ``HUNG``). ``--fork``: a process that has served,
stopped a server (so its callback thread runs) and still serves with another forks; the
child prints what stopping the parent's server and waiting for it do (``PARENT_STOP``,
``PARENT_WAIT``), starts a server the parent made but did not start, serves a call on it
(``ECHO``), then does the default; the parent prints ``CHILD <exit code>``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Optional, Tuple

import grpc
from _common import SERVICE, make_server, say

import puregrpc


def serve_and_exit(hung: bool, made: Optional[Tuple[puregrpc.Server, int]] = None) -> None:
    server, port = made if made is not None else make_server()

    def listener() -> None:
        if hung:
            say("HUNG")
            threading.Event().wait()
        time.sleep(0.5)
        say("LISTENER", os.getpid())

    server.add_drain_listener(listener)
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        echo = channel.unary_unary(f"/{SERVICE}/Echo")
        say("ECHO", echo(b"hi", timeout=10).decode())
    server.stop(0).wait()
    say("STOPPED", os.getpid())


def fork_and_serve(hung: bool) -> None:
    first, _ = make_server()
    ran = threading.Event()
    first.add_drain_listener(ran.set)
    first.start()
    first.stop(0).wait()
    assert ran.wait(5.0), "the drain listener did not run"
    parents, _ = make_server()
    parents.start()
    made = make_server()  # made before the fork, started in the child
    pid = os.fork()
    if pid == 0:
        signal.alarm(20)  # a child that hangs must not outlive the test
        try:
            parents.stop(0)
            say("PARENT_STOP returned")
        except RuntimeError as exc:
            say("PARENT_STOP RuntimeError", exc)
        try:
            parents.wait_for_termination(0.2)
            say("PARENT_WAIT returned")
        except RuntimeError as exc:
            say("PARENT_WAIT RuntimeError", exc)
        say("STOPPED_WAIT timed_out", first.wait_for_termination(0.2))  # terminated before the fork
        serve_and_exit(hung, made)
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    say("CHILD", os.waitstatus_to_exitcode(status))
    parents.stop(0).wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--hung", action="store_true")
    parser.add_argument("--fork", action="store_true")
    args = parser.parse_args()
    if args.fork:
        fork_and_serve(args.hung)
    else:
        serve_and_exit(args.hung)
    sys.exit(0)


if __name__ == "__main__":
    main()
