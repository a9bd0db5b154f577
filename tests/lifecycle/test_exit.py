"""Interpreter exit with started servers never hangs (lifecycle.md 20-21)."""

from __future__ import annotations

from puregrpc._callbacks import EXIT_WAIT

from ._proc import ServerProcess, ms

EXIT_MARGIN = 10.0  # the spec: "exit code 0 in seconds"


def test_1000_started_servers_then_sys_exit_0() -> None:
    with ServerProcess.script("many_servers.py", "--count", "1000", "--end", "exit") as server:
        ready, line = server.expect("READY")
        code = server.wait_exit(EXIT_MARGIN + 20.0)
        assert code is not None, f"still running {EXIT_MARGIN + 20.0}s after sys.exit(0)"
        took = server.exit_time - ready
        print(f"\n1000 servers started in {line.split()[2]} s; sys.exit(0) -> exit {ms(took)}")
        assert code == 0, server.describe()
        assert took < EXIT_MARGIN, f"exit {ms(took)} after sys.exit(0) with 1000 servers"


def test_exception_in_main_thread_after_start_lets_the_process_exit() -> None:
    with ServerProcess.script("many_servers.py", "--count", "3", "--end", "raise") as server:
        ready, _ = server.expect("READY")
        code = server.wait_exit(EXIT_MARGIN)
        assert code is not None, "the process did not exit after an uncaught exception"
        took = server.exit_time - ready
        server.close()
        print(f"\nuncaught exception after start() -> exit code {code} after {ms(took)}")
        assert code == 1, server.describe()
        assert "RuntimeError: boom" in "\n".join(server.stderr_lines)
        assert took < 2.0, f"exit {ms(took)} after the exception"


def test_exit_waits_for_a_drain_listener_still_running() -> None:
    """The callback thread is a daemon: an exit right after stop() once cut off the drain
    listener that stop() had queued (a SIGTERM handled by puregrpc.run lost its DRAINING
    line so). The exit now waits for what is queued."""
    with ServerProcess.script("exit_callbacks.py") as server:
        stopped, _ = server.expect("STOPPED")
        listener, _ = server.expect("LISTENER", EXIT_MARGIN)
        code = server.wait_exit(EXIT_MARGIN)
        print(f"\nlistener done {ms(listener - stopped)} after stop, exit {ms(server.exit_time - stopped)}")
        assert code == 0, server.describe()


def test_exit_gives_up_on_a_hung_drain_listener_in_seconds() -> None:
    with ServerProcess.script("exit_callbacks.py", "--hung") as server:
        stopped, _ = server.expect("STOPPED")  # HUNG (another thread) may come before or after
        code = server.wait_exit(EXIT_MARGIN)
        assert code is not None, f"still running {EXIT_MARGIN}s after sys.exit(0) with a hung listener"
        took = server.exit_time - stopped
        print(f"\nexit {ms(took)} after sys.exit(0), with a drain listener that never returns")
        assert code == 0, server.describe()
        assert EXIT_WAIT - 0.1 < took < EXIT_WAIT + 2.0, f"exit {ms(took)} after sys.exit(0)"
        assert "HUNG" in server.stdout_lines, server.describe()
        _, warning = server.expect("interpreter exit:", EXIT_MARGIN, stream="stderr")
        assert "abandoned" in warning, warning


def test_a_forked_child_serves_runs_its_listeners_and_exits() -> None:
    """A process that served forks: the child has none of puregrpc's threads. It once
    hung at exit (stopping the parent's server waited on the parent's I/O thread) and
    at a server's start. Now the child's servers get threads of their own, its
    callbacks run, and the parent's server says it is not the child's to stop or to wait
    for (a wait once blocked forever: that server never terminates in the child)."""
    with ServerProcess.script("exit_callbacks.py", "--fork") as server:
        _, parent_stop = server.expect("PARENT_STOP", EXIT_MARGIN)
        _, parent_wait = server.expect("PARENT_WAIT", EXIT_MARGIN)
        _, stopped_wait = server.expect("STOPPED_WAIT", EXIT_MARGIN)
        _, echo = server.expect("ECHO", EXIT_MARGIN)
        _, stopped = server.expect("STOPPED", EXIT_MARGIN)
        _, listener = server.expect("LISTENER", EXIT_MARGIN)
        _, child = server.expect("CHILD", EXIT_MARGIN)
        code = server.wait_exit(EXIT_MARGIN)
        assert code == 0, server.describe()
        assert parent_stop.startswith("PARENT_STOP RuntimeError") and "fork" in parent_stop, parent_stop
        assert parent_wait.startswith("PARENT_WAIT RuntimeError") and "fork" in parent_wait, parent_wait
        assert stopped_wait == "STOPPED_WAIT timed_out False", stopped_wait
        assert echo == "ECHO hi"
        assert listener.split()[1] == stopped.split()[1], "the listener ran in another process"
        assert child == "CHILD 0", server.describe()
