"""``puregrpc.run(server, grace, drain_delay)``: serving until a signal (lifecycle.md 22-24).

The signal scenarios run ``scripts/run_server.py`` in a subprocess and send real
SIGTERMs; the main-thread check and the restoring of signal handlers are in-process.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, List

import grpc
import pytest

import puregrpc

from ._proc import CAN_SIGNAL_A_THREAD, Rpc, ServerProcess, ms, new_channel


def _run_server(grace: float, drain_delay: float = 0.0) -> ServerProcess:
    return ServerProcess.script("run_server.py", "--grace", str(grace), "--drain-delay", str(drain_delay))


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_first_signal_drains_in_flight_rpc_then_exits_zero(signum: int) -> None:
    with _run_server(grace=5) as server:
        port, tid = server.ready()
        server.wait_blocked(tid)
        with new_channel(port) as old:
            in_flight = Rpc(old, "Sleep", b"3")
            server.expect("HANDLER Sleep", 5.0)
            sent = server.kill(signum)
            draining, _ = server.expect("DRAINING", 5.0)
            # New RPCs during the drain: refused, on a new channel and on the old one.
            assert server.wait_exit(0.5) is None
            with new_channel(port) as fresh:
                on_new = Rpc(fresh, "Echo", b"new")
                assert on_new.code(5.0) == grpc.StatusCode.UNAVAILABLE, on_new.details()
            on_old = Rpc(old, "Echo", b"old")
            assert on_old.code(5.0) == grpc.StatusCode.UNAVAILABLE, on_old.details()
            assert in_flight.code() == grpc.StatusCode.OK, in_flight.details()
        code = server.wait_exit(10.0)
        took = server.exit_time - sent
        print(
            f"\nrun(grace=5), 3 s RPC, {signal.Signals(signum).name}: drain began {ms(draining - sent)}; "
            f"new RPC refused in {ms(on_new.ended - on_new.started)} (new channel), "
            f"{ms(on_old.ended - on_old.started)} (old channel); in-flight OK at "
            f"{ms(in_flight.ended - sent)}; exit code {code} at {ms(took)}"
        )
        assert code == 0, server.describe()
        assert "RETURNED" in server.stdout_lines
        assert on_new.ended - on_new.started < 1.0
        assert on_old.ended - on_old.started < 1.0
        assert took < 3.5, f"exit {ms(took)} after the signal (spec: 3.5 s)"


def test_drain_delay_keeps_serving_then_refuses() -> None:
    with _run_server(grace=5, drain_delay=1) as server:
        port, tid = server.ready()
        server.wait_blocked(tid)
        with new_channel(port) as old:
            in_flight = Rpc(old, "Sleep", b"2.5")
            server.expect("HANDLER Sleep", 5.0)
            sent = server.kill(signal.SIGTERM)
            draining, _ = server.expect("DRAINING", 5.0)
            # During the delay: new RPCs still served, on old and new channels.
            assert server.wait_exit(0.1) is None
            with new_channel(port) as fresh:
                during_new = Rpc(fresh, "Echo", b"during")
                assert during_new.code(5.0) == grpc.StatusCode.OK, during_new.details()
            during_old = Rpc(old, "Echo", b"during")
            assert during_old.code(5.0) == grpc.StatusCode.OK, during_old.details()
            assert time.monotonic() - draining < 0.9, "the checks during the delay came too late"
            # After it: refused.
            assert server.wait_exit(max(0.0, draining + 1.3 - time.monotonic())) is None
            with new_channel(port) as fresh:
                after_new = Rpc(fresh, "Echo", b"after")
                assert after_new.code(5.0) == grpc.StatusCode.UNAVAILABLE, after_new.details()
            after_old = Rpc(old, "Echo", b"after")
            assert after_old.code(5.0) == grpc.StatusCode.UNAVAILABLE, after_old.details()
            assert in_flight.code() == grpc.StatusCode.OK, in_flight.details()
        code = server.wait_exit(10.0)
        print(
            f"\nrun(drain_delay=1): served during the delay, refused after it; "
            f"in-flight OK; exit code {code} {ms(server.exit_time - sent)} after SIGTERM"
        )
        assert code == 0, server.describe()


@pytest.mark.parametrize("method", ["CoopSleep", "Sleep"])
def test_second_sigterm_cancels_at_once(method: str) -> None:
    handler_seconds = 30.0 if method == "CoopSleep" else 2.0
    with _run_server(grace=10) as server:
        port, tid = server.ready()
        server.wait_blocked(tid)
        with new_channel(port) as channel:
            in_flight = Rpc(channel, method, str(handler_seconds).encode())
            handler_began, _ = server.expect(f"HANDLER {method}", 5.0)
            server.kill(signal.SIGTERM)
            server.expect("DRAINING", 5.0)
            assert server.wait_exit(0.3) is None
            sent = server.kill(signal.SIGTERM)
            returned, _ = server.expect("RETURNED", 5.0)
            # The spec: RPCs still running when the grace ends are cancelled, and
            # the client sees UNAVAILABLE; a forced stop is a grace that ended now.
            status = in_flight.code(5.0)
            cancelled = in_flight.ended - sent
        code = server.wait_exit(handler_seconds + 5.0)
        assert code == 0, server.describe()
        exited = server.exit_time - sent
        print(
            f"\nsecond SIGTERM, {method}: in-flight client {status.name} after {ms(cancelled)}; "
            f"run() returned after {ms(returned - sent)}; exit after {ms(exited)}"
        )
        assert status == grpc.StatusCode.UNAVAILABLE, in_flight.details()
        assert cancelled < 0.5, f"in-flight RPC ended {ms(cancelled)} after the second SIGTERM"
        assert returned - sent < 0.5, f"run() returned {ms(returned - sent)} after the second SIGTERM"
        if method == "CoopSleep":
            assert exited < 1.0, f"exit {ms(exited)} after the second SIGTERM"
        else:  # the process waits for the uncooperative handler thread, no longer
            handler_end = handler_began + handler_seconds
            assert server.exit_time < handler_end + 1.0, (
                f"exit {ms(server.exit_time - handler_end)} after the handler's end"
            )


# -- in-process ------------------------------------------------------------------------


def test_run_off_the_main_thread_raises_a_clear_error() -> None:
    pool = ThreadPoolExecutor(max_workers=2)
    server = puregrpc.server(pool)
    server.add_insecure_port("127.0.0.1:0")
    errors: List[BaseException] = []

    def call_run() -> None:
        try:
            puregrpc.run(server, grace=0)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=call_run)
    thread.start()
    thread.join(5.0)
    try:
        assert not thread.is_alive(), "run() off the main thread hung"
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
        assert "main thread" in str(errors[0]), str(errors[0])
    finally:
        server.stop(None)
        pool.shutdown(wait=False)


def test_run_restores_the_previous_signal_handlers() -> None:
    assert threading.current_thread() is threading.main_thread()
    pool = ThreadPoolExecutor(max_workers=2)
    server = puregrpc.server(pool)
    server.add_insecure_port("127.0.0.1:0")
    seen: List[Any] = []

    def mine(signum: int, frame: Any) -> None:  # pragma: no cover - never called
        raise AssertionError("the previous handler was called during run()")

    def signal_run() -> None:
        # run() installs its handlers before it blocks: wait for them, then SIGTERM
        # ourselves (only if they are run()'s, so a bug cannot kill the test process).
        deadline = time.monotonic() + 5.0
        while signal.getsignal(signal.SIGTERM) is mine and time.monotonic() < deadline:
            time.sleep(0.005)
        seen.append(signal.getsignal(signal.SIGTERM))
        seen.append(signal.getsignal(signal.SIGINT))
        if seen[0] is not mine and callable(seen[0]):
            signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)
        else:
            server.stop(None)

    before = (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT))
    signal.signal(signal.SIGTERM, mine)
    signal.signal(signal.SIGINT, mine)
    helper = threading.Thread(target=signal_run)
    try:
        helper.start()
        began = time.monotonic()
        puregrpc.run(server, grace=0)
        took = time.monotonic() - began
        helper.join(5.0)
        assert signal.getsignal(signal.SIGTERM) is mine
        assert signal.getsignal(signal.SIGINT) is mine
        assert seen[0] is not mine and seen[1] is not mine, "run() did not install its handlers"
        assert took < 5.0
    finally:
        signal.signal(signal.SIGTERM, before[0])
        signal.signal(signal.SIGINT, before[1])
        server.stop(None)
        pool.shutdown(wait=False)


@pytest.mark.skipif(not CAN_SIGNAL_A_THREAD, reason="tgkill's number is known on Linux x86_64 and aarch64")
def test_a_sigterm_taken_by_another_thread_still_drains() -> None:
    """The kernel may hand a process's SIGTERM to any of its threads. Python runs the
    handler in the main thread when that thread wakes, which a thread blocked in a lock
    never does: a --workers test saw a worker ignore its SIGTERM and serve on. The
    main thread now waits on the signal wakeup fd (Lifecycle.wait). Here the signal
    goes to one of the server's other threads (tgkill), never to the main thread."""
    with _run_server(grace=5) as server:
        _, tid = server.ready()
        server.wait_blocked(tid)
        sent = server.kill_another_thread(signal.SIGTERM)
        draining, _ = server.expect("DRAINING", 5.0)
        code = server.wait_exit(5.0)
        print(f"\nSIGTERM to another thread than the main one: drain began {ms(draining - sent)}")
        assert code == 0, server.describe()
        assert "RETURNED" in server.stdout_lines
