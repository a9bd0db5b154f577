"""The asyncio flavour of the server: the same ``ServerCore``, on the caller's loop.

``AioCore`` differs from the sync core in two places only: its loop is the one
that awaits ``start()`` (not puregrpc's I/O thread), and it dispatches a call with
an async handler to a ``TaskDriver`` (a task on that loop) and one with a sync
handler to the migration thread pool, as grpc.aio does.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import math
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional, Sequence, Set, Tuple

from ._aio_call import AioServicerContext, TaskDriver, behavior_of, is_async_behavior
from ._call import CallCore
from ._handlers import HandlerCallDetails
from ._lifecycle import Input, State
from ._loop import LoopIO
from ._server import ServerBase, ServerCore, _register_with_grpcio
from ._status import StatusCode
from ._sync_call import SyncDriver


class AioCore(ServerCore):
    __slots__ = ("tasks",)  # as ServerCore's

    def __init__(
        self,
        migration_thread_pool: Any,
        interceptors: Sequence[Any],
        options: Sequence[Tuple[str, Any]],
        maximum_concurrent_rpcs: Optional[int],
        compression: Any,
    ) -> None:
        for interceptor in interceptors:
            method = getattr(interceptor, "intercept_service", None)
            if method is not None and not inspect.iscoroutinefunction(method):
                raise TypeError(
                    f"interceptor {interceptor!r} has a sync intercept_service(): an asyncio server "
                    "takes grpc.aio.ServerInterceptor (or puregrpc.aio.ServerInterceptor) objects, "
                    "whose intercept_service is async"
                )
        # No thread is started until a sync handler is called.
        pool = migration_thread_pool or ThreadPoolExecutor(thread_name_prefix="puregrpc-aio-sync")
        super().__init__(pool, interceptors, options, maximum_concurrent_rpcs, compression, io=LoopIO())
        # Handler tasks not yet ended: the loop keeps only weak references to tasks.
        self.tasks: Set[asyncio.Task[None]] = set()

    async def start_async(self) -> None:
        self.lifecycle.apply(Input.START)
        self.io.attach(asyncio.get_running_loop(), threading.current_thread())
        await self._start_listeners()

    # -- loop side -----------------------------------------------------------------
    def dispatch(self, call: CallCore) -> None:
        handler = call.handler
        if handler is not None and not is_async_behavior(behavior_of(handler)):
            self.submit_sync(call)
        else:
            TaskDriver(call, self).start()

    def run_sync(self, call: CallCore) -> None:
        """A task found a sync handler (through interceptors): run it on the pool."""
        call.to_loop = self.io.post
        driver = SyncDriver(call, self.registry, self.interceptors, counted=False)
        try:
            self.pool_dispatcher.submit(driver.run)
        except RuntimeError as exc:  # the pool was shut down
            call.abort_loop(StatusCode.UNAVAILABLE, f"server thread pool unavailable: {exc}")

    async def lookup(self, details: HandlerCallDetails) -> Any:
        """The handler for ``details``, through the async interceptors in order."""
        interceptors = self.interceptors
        registry = self.registry

        async def continuation_at(index: int, call_details: Any) -> Any:
            if index == len(interceptors):
                return registry.lookup(call_details)
            return await interceptors[index].intercept_service(
                functools.partial(continuation_at, index + 1), call_details
            )

        return await continuation_at(0, details)


class Server(ServerBase):
    """An asyncio gRPC server; the methods of ``grpc.aio.Server``. Make one with
    ``puregrpc.aio.server()`` and start it from the loop that is to serve it."""

    _core: AioCore

    async def start(self) -> None:
        """Start serving on the running loop. ValueError if already started or stopped."""
        _register_with_grpcio()
        _register_with_grpc_aio()
        await self._core.start_async()

    async def stop(self, grace: Optional[float]) -> None:
        """Refuse new RPCs now, cancel those still running after ``grace`` seconds
        (``None``: at once), and return once the server has terminated."""
        core = self._core
        if core.lifecycle.state is State.NEW:
            core.stop(grace)  # a no-op, as grpc.aio
            return
        waiter = _TerminationWaiter(core)
        try:
            core.stop(grace)
            await waiter.wait(None)
        finally:
            waiter.forget()

    async def wait_for_termination(self, timeout: Optional[float] = None) -> bool:
        """Wait until the server terminates or ``timeout`` seconds pass; True if the
        timeout passed. Cancelling one waiter affects that waiter alone."""
        waiter = _TerminationWaiter(self._core)
        try:
            return await waiter.wait(timeout)
        finally:
            waiter.forget()

    def __del__(self) -> None:
        core = getattr(self, "_core", None)
        if core is None:
            return
        if core.lifecycle.state is State.SERVING:
            try:  # as the sync server: a graceful drain, begun on the loop
                core.io.loop.call_soon_threadsafe(core.stop, math.inf)
            except RuntimeError:  # the loop is closed
                pass
        else:
            core.close_unstarted()


class _TerminationWaiter:
    """One waiter's own future, resolved at termination: cancelling it touches no other."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core
        loop = asyncio.get_running_loop()
        self._future: asyncio.Future[None] = loop.create_future()
        self._loop = loop
        self._registered = core.lifecycle.add_termination_callback(self._terminated)

    def _terminated(self) -> None:
        """Any thread (the one that terminated the server), under the lifecycle's lock."""
        try:
            self._loop.call_soon_threadsafe(self._resolve)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    def _resolve(self) -> None:
        if not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: Optional[float]) -> bool:
        if not self._registered:
            return False  # terminated already
        if timeout is None:
            await self._future
            return False
        if timeout <= 0:
            return not self._future.done()
        done, _ = await asyncio.wait({self._future}, timeout=timeout)
        return not done

    def forget(self) -> None:
        self._core.lifecycle.remove_termination_callback(self._terminated)
        if not self._future.done():
            self._future.cancel()


def server(
    migration_thread_pool: Optional[Any] = None,
    handlers: Optional[Sequence[Any]] = None,
    interceptors: Optional[Sequence[Any]] = None,
    options: Optional[Sequence[Tuple[str, Any]]] = None,
    maximum_concurrent_rpcs: Optional[int] = None,
    compression: Any = None,
) -> Server:
    """Create an asyncio server, as ``grpc.aio.server(...)``: async handlers run as tasks
    on the loop that starts it; sync handlers run in ``migration_thread_pool``."""
    core = AioCore(migration_thread_pool, interceptors or (), options or (), maximum_concurrent_rpcs, compression)
    _register_with_grpcio()
    _register_with_grpc_aio()
    srv = Server(core)
    if handlers:
        srv.add_generic_rpc_handlers(handlers)
    return srv


_aio_registered = False


def _register_with_grpc_aio() -> None:
    """As ``_register_with_grpcio``, for grpc.aio's ABCs (``grpc.aio.Server``,
    ``grpc.aio.ServicerContext``), where grpc.aio has been imported."""
    global _aio_registered
    aio = sys.modules.get("grpc.aio")
    if _aio_registered or aio is None:
        return
    _aio_registered = True
    for name, concrete in (("Server", Server), ("ServicerContext", AioServicerContext)):
        register = getattr(getattr(aio, name, None), "register", None)
        if register is not None:
            register(concrete)
