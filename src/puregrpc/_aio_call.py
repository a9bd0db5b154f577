"""The asyncio adapter: runs an async handler for one ``CallCore`` as a task on the loop.

The task runs on the loop that owns the connection, so it calls the core's loop
side directly (no thread hop, no lock contention) and waits for news (a request
message, send window, the end of the call) on a future the core resolves through
its ``waker``. A client cancel, a deadline or the end of a stop's grace cancels the
task: the handler sees ``asyncio.CancelledError``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Sequence, Tuple

from ._call import RESPONSE_QUEUE_LIMIT, CallCore
from ._context import ContextBase
from ._errors import AbortError, IterationError, RpcError, Stop
from ._handlers import HandlerCallDetails
from ._protocol import framed_size
from ._status import StatusCode

_LOGGER = logging.getLogger("puregrpc")


class _EOF:
    """The end of the request stream, as ``context.read()`` returns it."""

    def __repr__(self) -> str:
        return "<puregrpc.aio.EOF>"


_OWN_EOF = _EOF()
_END = object()  # next_request's end of the request stream (eof() only where the user sees it)

# asyncio.Task's eager_start (Python 3.12): the task's first step runs in the call that
# makes it.
_EAGER = sys.version_info >= (3, 12)


def eof() -> Any:
    """``grpc.aio.EOF`` where grpcio's aio module is loaded (code written for it compares
    against that object), else puregrpc's own."""
    aio = sys.modules.get("grpc.aio")
    return getattr(aio, "EOF", _OWN_EOF) if aio is not None else _OWN_EOF


# behavior -> (is asyncio code, is an async generator function): asked once per call, and
# inspect is not free. Handlers are few and long-lived; the cap only guards against a
# generic handler that makes new functions for every call.
_KINDS: Dict[Any, Tuple[bool, bool]] = {}
_KINDS_CAP = 4096


def _kind(behavior: Any) -> Tuple[bool, bool]:
    try:
        return _KINDS[behavior]
    except (KeyError, TypeError):
        pass
    call = getattr(behavior, "__call__", None)  # noqa: B004 - an object with an async __call__
    agen = inspect.isasyncgenfunction(behavior) or inspect.isasyncgenfunction(call)
    kind = (agen or inspect.iscoroutinefunction(behavior) or inspect.iscoroutinefunction(call), agen)
    try:
        if len(_KINDS) >= _KINDS_CAP:
            _KINDS.clear()
        _KINDS[behavior] = kind
    except TypeError:  # unhashable
        pass
    return kind


def is_async_behavior(behavior: Any) -> bool:
    """Whether a handler function is asyncio code (a coroutine or async generator function)."""
    return _kind(behavior)[0]


def behavior_of(handler: Any) -> Any:
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary
    return handler.unary_stream if handler.response_streaming else handler.unary_unary


def _direct(fn: Callable[..., Any], *args: Any) -> None:
    fn(*args)


class TaskDriver:
    """Runs one RPC's async handler as a task; the core's adapter for asyncio."""

    def __init__(self, call: CallCore, server: Any) -> None:
        self.call = call
        self.server = server  # _aio_server.AioCore
        self.task: Optional[asyncio.Task[None]] = None
        self.finishing = False  # the handler's own end is on its way: no cancel
        self.cancel_when_started = False
        # With the context each is called with. The driver keeps no reference to the
        # context, which holds the driver: no cycle, so an RPC's objects are freed by
        # reference counting as it ends, not left to the cyclic garbage collector.
        self.done_callbacks: Optional[List[Tuple[Callable[[Any], None], AioServicerContext]]] = []
        self.unflushed = 0  # response bytes written since the loop last ran
        call.to_loop = _direct
        call.on_terminated = self._terminated

    def start(self) -> None:
        """Loop: start the task; from Python 3.12 it runs at once, up to its first wait."""
        loop = self.server.io.loop
        if _EAGER:
            # A unary handler that awaits nothing ends within this step: no loop turn
            # between the request and its response, and no scheduling of the task.
            task = asyncio.Task(self._run(), loop=loop, eager_start=True)  # type: ignore[call-arg,unused-ignore]
        else:
            task = loop.create_task(self._run())
            self.server.io.task_woken()
        self.task = task
        if not task.done():
            self.server.tasks.add(task)  # the loop holds tasks weakly; _run's end removes it
            if self.cancel_when_started:
                task.cancel()

    def _terminated(self) -> None:
        """Loop: the call ended (by the handler, the client, a deadline or a stop)."""
        task = self.task
        if not self.finishing:
            if task is None:
                self.cancel_when_started = True  # during the task's first (eager) step
            elif not task.done():
                task.cancel()
                # Cancelled before its first step, _run never runs to untrack it (a
                # second discard, where it does, is harmless; cancels are rare).
                task.add_done_callback(self.server.tasks.discard)
        callbacks, self.done_callbacks = self.done_callbacks, None
        if callbacks:
            loop = self.server.io.loop
            for callback, context in callbacks:
                loop.call_soon(_run_done_callback, callback, context)

    async def _news(self) -> None:
        """Wait for the core to report anything (message, window, end)."""
        io = self.server.io
        future = io.loop.create_future()

        def wake() -> None:
            if not future.done():
                future.set_result(None)
                io.task_woken()

        self.call.waker = wake
        try:
            await future
        finally:
            self.call.waker = None

    async def _run(self) -> None:
        call = self.call
        try:
            call.link.worker_started()
            if not call.active:
                return
            await self._serve()
        except asyncio.CancelledError:
            if call.active and not self.finishing:
                # Cancelled by someone else (the loop shutting down): the client is told.
                call.cancel_from_handler()
            return
        except Stop as stop:
            if stop.code is not None and call.active:
                self.finishing = True
                call.finish(None, stop.code, stop.details)
        except BaseException:
            _LOGGER.exception("puregrpc internal error serving %s", call.method)
            if call.active:
                self.finishing = True
                call.finish(None, StatusCode.INTERNAL, "internal server error")
            raise
        finally:
            # Here, not by a done callback: that would cost the loop a turn per RPC.
            if self.task is not None:  # None: it ended in its eager first step, untracked
                self.server.tasks.discard(self.task)

    async def _serve(self) -> None:
        call = self.call
        server = self.server
        handler = call.handler
        if handler is None:
            try:
                handler = await server.lookup(HandlerCallDetails(call.method, call.metadata))
            except Exception as exc:
                _LOGGER.exception("Exception servicing handler for %s: %s", call.method, exc)
                raise Stop(StatusCode.UNKNOWN, "Error in service handler!") from None
            if handler is None:
                raise Stop(StatusCode.UNIMPLEMENTED, "Method not found!")
            call.handler = handler
            call.handler_found_loop(handler)
            if not is_async_behavior(behavior_of(handler)):
                # A sync handler (found through an interceptor): to the migration pool,
                # once its request is here, as the server does for one found on the loop
                # (which it gives a task only when it is async: AioCore.dispatch).
                if not handler.request_streaming:
                    await self._request_here()
                if call.active:
                    self.finishing = True
                    call.on_terminated = None
                    server.run_sync(call)
                return
        call.serializer = handler.response_serializer
        call.deserializer = handler.request_deserializer
        await self._call_handler(handler, AioServicerContext(call, self))

    async def _request_here(self) -> None:
        call = self.call
        while True:
            with call.lock:
                if call.requests or call.request_ended or not call.active:
                    call.reading = False
                    return
                call.reading = True
            call.link.reader_waiting()
            await self._news()

    async def _call_handler(self, handler: Any, context: AioServicerContext) -> None:
        call = self.call
        if handler.request_streaming:
            request: Any = RequestStream(self)
        else:
            request = await self.read_unary()
        behavior = behavior_of(handler)
        try:
            if handler.response_streaming:
                framed = None
                if _kind(behavior)[1]:
                    await self._stream_responses(behavior(request, context))
                else:
                    result = await behavior(request, context)  # the context.write() style
                    if result is not None and hasattr(result, "__aiter__"):
                        await self._stream_responses(result)
            else:
                result = await behavior(request, context)
                if call.code is None or call.code is StatusCode.OK:
                    framed = call.frame(result)
                else:
                    framed = None
        except Exception as exc:  # CancelledError is a BaseException: it goes through
            raise call.handler_stopped(exc, aio=True) from None
        if call.active:
            self.finishing = True
            call.finish(framed, call.code or StatusCode.OK, call.details)

    async def _stream_responses(self, responses: Any) -> None:
        try:
            async for response in responses:
                if not await self.write(response):
                    break
        except (Stop, AbortError, RpcError, asyncio.CancelledError):
            raise
        except Exception as exc:
            raise IterationError(exc) from exc
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None and not self.call.active:
                await aclose()

    # -- what the handler awaits --------------------------------------------------
    async def read_unary(self) -> Any:
        call = self.call
        if not call.requests:  # usually queued already: dispatch waits for it (the loop's thread fills it)
            await self._request_here()
        with call.lock:
            if not call.active:
                raise Stop(None)
            if not call.requests:
                raise call.unary_request_missing()
            compressed, payload = call.pop_request()
        return call.decode(compressed, payload)

    async def next_request(self) -> Any:
        """The next request message, or ``_END`` at the end; raises if the call ended."""
        call = self.call
        while True:
            with call.lock:
                call.reading = False
                if call.requests:
                    compressed, payload = call.pop_request()
                    break
                if not call.active:
                    raise RpcError("the RPC was cancelled or has ended")
                if call.request_ended:
                    return _END
                call.reading = True
            call.link.reader_waiting()
            await self._news()
        return call.decode(compressed, payload)

    async def write(self, response: Any) -> bool:
        """Send one response message; waits while the client is not reading."""
        call = self.call
        framed = call.frame(response)
        size = framed_size(framed)
        while True:
            with call.lock:
                if not call.active:
                    return False
                if not call.write_blocked():
                    break
            await self._news()
        call.send_now(framed, size)
        # The engine takes a message at once when the windows allow, so a handler that
        # never has to wait would queue its whole stream before the loop writes any of it
        # (and before the transport can say it is full): every RESPONSE_QUEUE_LIMIT bytes
        # it lets the loop run, so output goes out, and backpressure is felt, as it goes.
        self.unflushed += size
        if self.unflushed >= RESPONSE_QUEUE_LIMIT:
            self.unflushed = 0
            await asyncio.sleep(0)
        return True

    def add_done_callback(self, callback: Callable[[Any], None], context: AioServicerContext) -> None:
        if self.done_callbacks is None:
            self.server.io.loop.call_soon(_run_done_callback, callback, context)
        else:
            self.done_callbacks.append((callback, context))


def _run_done_callback(callback: Callable[[Any], None], context: Any) -> None:
    try:
        callback(context)
    except Exception:
        _LOGGER.exception("RPC done callback %r raised", callback)


class RequestStream:
    """The request stream of a client-streaming RPC, as an async iterator."""

    def __init__(self, driver: TaskDriver) -> None:
        self._driver = driver

    def __aiter__(self) -> AsyncIterator[Any]:
        return self

    async def __anext__(self) -> Any:
        message = await self._driver.next_request()
        if message is _END:
            raise StopAsyncIteration
        return message


class AioServicerContext(ContextBase):
    """Per-RPC context handed to async handlers; the methods of ``grpc.aio.ServicerContext``."""

    def __init__(self, call: CallCore, driver: TaskDriver) -> None:
        super().__init__(call)
        self._driver = driver

    async def read(self) -> Any:
        """The next request message, or ``EOF`` once the client has sent them all."""
        if not self._call.handler.request_streaming:  # type: ignore[union-attr]
            raise RuntimeError("read() is for request-streaming RPCs; the request is the handler's argument")
        message = await self._driver.next_request()
        return eof() if message is _END else message

    async def write(self, message: Any) -> None:
        """Send one response message; waits while the client is not reading."""
        if not self._call.handler.response_streaming:  # type: ignore[union-attr]
            raise RuntimeError("write() is for response-streaming RPCs; return the response instead")
        if not await self._driver.write(message):
            raise asyncio.InvalidStateError("the RPC has already ended")

    async def send_initial_metadata(self, initial_metadata: Sequence[Tuple[str, Any]]) -> None:
        """Send the response headers now, with ``initial_metadata``."""
        self._send_initial_metadata(initial_metadata)

    async def abort(self, code: Any, details: str = "", trailing_metadata: Sequence[Tuple[str, Any]] = ()) -> None:
        """End the RPC now with ``code`` and ``details``; raises ``AbortError``, never returns."""
        if trailing_metadata:
            self._call.trailing_metadata = tuple(trailing_metadata)
        self._record_abort(code, details)
        raise AbortError(self._call.details)

    async def abort_with_status(self, status: Any) -> None:
        """Abort with a ``grpc.Status``-like object (code, details, trailing_metadata)."""
        await self.abort(status.code, getattr(status, "details", "") or "", getattr(status, "trailing_metadata", ()))

    def cancelled(self) -> bool:
        """True once the RPC was cancelled: by the client, its deadline, or a stop."""
        call = self._call
        return call.done and not call.completed

    def done(self) -> bool:
        """True once the RPC has ended, however it ended."""
        return self._call.done

    def add_done_callback(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(context)`` on the loop once the RPC has ended."""
        self._driver.add_done_callback(callback, self)


__all__ = ["AioServicerContext", "RequestStream", "TaskDriver", "eof", "is_async_behavior"]
