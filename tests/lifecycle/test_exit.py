"""Interpreter exit with started servers never hangs (lifecycle.md 20-21)."""

from __future__ import annotations

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
