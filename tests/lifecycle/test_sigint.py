"""Ctrl+C on a server process whose main thread waits (lifecycle.md 11, 20).

Each test runs ``scripts/wait_server.py`` in a subprocess, sends real SIGINTs and
times the process from outside. The spec's uncooperative handler sleeps 30 s;
here it sleeps ``UNCOOPERATIVE`` (4 s) to keep the suite fast: the margins
(new RPC refused within 1 s, exit by the handler's end + 1 s) do not depend on it.
"""

from __future__ import annotations

import signal
import time

import grpc
import pytest

from ._proc import CAN_SIGNAL_A_THREAD, Rpc, ServerProcess, best_of, ms, new_channel

UNCOOPERATIVE = 4.0  # the spec's 30 s handler, shortened


def _idle_sigint_to_exit() -> float:
    with ServerProcess.script("wait_server.py", "--on-interrupt", "exit1") as server:
        _, tid = server.ready()
        server.wait_blocked(tid)
        sent = server.kill(signal.SIGINT)
        interrupted, _ = server.expect("INTERRUPTED", 5.0)
        code = server.wait_exit(5.0)
        assert code == 1, server.describe()
        took = server.exit_time - sent
        print(f"\nidle server: SIGINT -> KeyboardInterrupt {ms(interrupted - sent)}, -> exit {ms(took)}")
        return took


def test_idle_server_sigint_raises_keyboard_interrupt_and_exits_within_200ms() -> None:
    figures = best_of(3, 0.200, _idle_sigint_to_exit)
    assert min(figures) < 0.200, f"idle SIGINT-to-exit {[ms(f) for f in figures]} (spec: 200 ms)"


@pytest.mark.parametrize("shape", ["exit1", "raise"])
def test_uncooperative_handler_sigint_refuses_new_rpcs_and_exits_after_it(shape: str) -> None:
    with ServerProcess.script("wait_server.py", "--on-interrupt", shape) as server:
        port, tid = server.ready()
        server.wait_blocked(tid)
        with new_channel(port) as first:
            in_flight = Rpc(first, "Sleep", str(UNCOOPERATIVE).encode())
            handler_began, _ = server.expect("HANDLER Sleep", 5.0)
            sent = server.kill(signal.SIGINT)
            server.expect("INTERRUPTED", 5.0)
            # The in-flight RPC is cancelled at interpreter exit (grace 0): UNAVAILABLE.
            assert in_flight.code() == grpc.StatusCode.UNAVAILABLE, in_flight.details()
            cancelled = in_flight.ended - sent
            # A new RPC one second later, on a new channel, while the handler still sleeps.
            assert server.wait_exit(1.0) is None, "exited before the uncooperative handler returned"
            with new_channel(port) as second:
                late = Rpc(second, "Echo", b"late")
                assert late.code(5.0) == grpc.StatusCode.UNAVAILABLE, late.details()
                refused = late.ended - late.started
            # and on the first channel, whose connection the server has closed
            late_old = Rpc(first, "Echo", b"late")
            assert late_old.code(5.0) == grpc.StatusCode.UNAVAILABLE, late_old.details()
            assert late_old.ended - late_old.started < 1.0
        handler_end = handler_began + UNCOOPERATIVE
        code = server.wait_exit(max(0.0, handler_end + 5.0 - time.monotonic()))
        assert code is not None, f"still running 5 s after the handler's end; {server.describe()}"
        # An uncaught KeyboardInterrupt makes CPython end itself with SIGINT.
        assert code == (1 if shape == "exit1" else -signal.SIGINT), server.describe()
        print(
            f"\n{shape}: in-flight RPC cancelled {ms(cancelled)} after SIGINT; new RPC refused in "
            f"{ms(refused)}; exit {ms(server.exit_time - handler_end)} after the handler's end"
        )
        assert cancelled < 0.5, f"in-flight RPC cancelled {ms(cancelled)} after SIGINT"
        assert refused < 1.0, f"new RPC took {ms(refused)} to fail (spec: 1 s)"
        assert server.exit_time <= handler_end + 1.0, (
            f"exit {ms(server.exit_time - handler_end)} after the handler's end (spec: 1 s)"
        )


def _cooperative_sigint_to_exit() -> float:
    with ServerProcess.script("wait_server.py") as server:
        port, tid = server.ready()
        server.wait_blocked(tid)
        with new_channel(port) as channel:
            in_flight = Rpc(channel, "CoopSleep", b"30")
            server.expect("HANDLER CoopSleep", 5.0)
            sent = server.kill(signal.SIGINT)
            code = server.wait_exit(5.0)
            assert code == 1, server.describe()
            took = server.exit_time - sent
            status = in_flight.code()
        print(f"\ncooperative handler: SIGINT -> exit {ms(took)}; in-flight client saw {status.name}")
        assert status == grpc.StatusCode.UNAVAILABLE, in_flight.details()
        return took


def test_cooperative_handler_sigint_exits_within_300ms() -> None:
    figures = best_of(3, 0.300, _cooperative_sigint_to_exit)
    assert min(figures) < 0.300, f"SIGINT-to-exit with a cooperative handler {[ms(f) for f in figures]} (spec: 300 ms)"


def test_second_sigint_ends_the_process_while_an_uncooperative_handler_runs() -> None:
    with ServerProcess.script("wait_server.py") as server:
        port, tid = server.ready()
        server.wait_blocked(tid)
        with new_channel(port) as channel:
            Rpc(channel, "Sleep", b"30")
            server.expect("HANDLER Sleep", 5.0)
            server.kill(signal.SIGINT)
            server.expect("INTERRUPTED", 5.0)
            assert server.wait_exit(0.3) is None, "exited before the uncooperative handler returned"
            sent = server.kill(signal.SIGINT)
            code = server.wait_exit(5.0)
            assert code is not None, f"a second SIGINT did not end the process; {server.describe()}"
            took = server.exit_time - sent
        print(f"\nsecond SIGINT -> exit {ms(took)} (exit code {code})")
        assert code != 0, server.describe()
        assert took < 1.0, f"second SIGINT-to-exit {ms(took)}"


@pytest.mark.skipif(not CAN_SIGNAL_A_THREAD, reason="tgkill's number is known on Linux x86_64 and aarch64")
def test_a_sigint_taken_by_another_thread_still_interrupts_the_wait() -> None:
    """lifecycle.md 11 when the kernel hands the SIGINT to a thread other than the main
    one (tgkill here): the main thread, blocked in wait_for_termination(), still gets
    its KeyboardInterrupt, because it waits on the signal wakeup fd. Blocked in a lock,
    it would never wake to run the handler."""
    with ServerProcess.script("wait_server.py", "--on-interrupt", "exit1") as server:
        _, tid = server.ready()
        server.wait_blocked(tid)
        sent = server.kill_another_thread(signal.SIGINT)
        interrupted, _ = server.expect("INTERRUPTED", 5.0)
        code = server.wait_exit(5.0)
        print(f"\nSIGINT to another thread: KeyboardInterrupt {ms(interrupted - sent)}")
        assert code == 1, server.describe()
