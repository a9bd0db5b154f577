"""The thread-pool adapter: runs a sync handler for one ``CallCore`` on a pool thread.

The handler blocks, so this side waits on the core's condition (``CallCore.condition``): for a request
message (``next_request``), or for room to write (``write``). It reaches the loop
only through the core (``to_loop``: a post, batched into one wake-up per burst).
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator, Optional, Tuple

from ._call import CallCore
from ._context import ServicerContext
from ._errors import AbortError, IterationError, RpcError, Stop
from ._handlers import HandlerCallDetails, intercepted_lookup
from ._status import StatusCode

_LOGGER = logging.getLogger("puregrpc")


class SyncDriver:
    """Runs one RPC's handler on a thread: ``run`` is what the pool is given."""

    __slots__ = ("call", "counted", "interceptors", "read_turn", "registry")

    def __init__(self, call: CallCore, registry: Any, interceptors: Any, counted: bool = True) -> None:
        self.call = call
        self.registry = registry
        self.interceptors = interceptors
        self.counted = counted  # the connection counts it as waiting for a worker
        self.read_turn: Optional[threading.Lock] = None

    def run(self) -> None:
        """The whole RPC on a handler thread: lookup, handler, status."""
        call = self.call
        link = call.link
        if self.counted:
            link.worker_started()
        if not call.active:
            return  # cancelled while it waited for a thread
        if link.output_over_limit():
            # The client is not taking what this connection already answered:
            # wait (on the loop, holding no thread) until its output drains.
            call.to_loop(link.hold, call)
            return
        try:
            self._run()
        except Stop as stop:
            if stop.code is not None:
                call.finish(None, stop.code, stop.details)
        except BaseException:
            _LOGGER.exception("puregrpc internal error serving %s", call.method)
            call.finish(None, StatusCode.INTERNAL, "internal server error")
            raise

    def _run(self) -> None:
        call = self.call
        handler = call.handler
        if handler is None:
            try:
                handler = intercepted_lookup(
                    self.registry, self.interceptors, HandlerCallDetails(call.method, call.metadata)
                )
            except Exception as exc:
                _LOGGER.exception("Exception servicing handler for %s: %s", call.method, exc)
                raise Stop(StatusCode.UNKNOWN, "Error in service handler!") from None
            if handler is None:
                raise Stop(StatusCode.UNIMPLEMENTED, "Method not found!")
            call.handler = handler
            if call.settings.observers:
                call.to_loop(call.handler_found_loop, handler)
            if not handler.request_streaming and not self._request_ready():
                # Found by user code on this thread, but the request message is not
                # here yet: give the thread back; the loop dispatches the call again
                # once it is (a client cannot hold threads by withholding requests).
                call.to_loop(call.link.await_request, call)
                return
        call.serializer = handler.response_serializer
        call.deserializer = handler.request_deserializer
        run_handler(call, handler, self)

    def _request_ready(self) -> bool:
        call = self.call
        with call.lock:
            return bool(call.requests) or call.request_ended or not call.active

    # -- what the handler's blocking calls do ------------------------------------
    def _take_request(self) -> Optional[Tuple[bool, bytes]]:
        """The next queued message, waiting while none is queued, the request stream
        is open and the call active; None if there is none."""
        call = self.call
        with call.lock:
            if call.requests:  # the usual case: no wait
                return call.pop_request()
            turn = self.read_turn
            if turn is None:
                turn = self.read_turn = threading.Lock()
        # One thread parks at a time (threads reading one stream at once take turns):
        # the wake is given once per news, to one thread.
        with turn:
            while True:
                with call.lock:
                    if call.requests:
                        call.reading = False
                        return call.pop_request()
                    if call.request_ended or not call.active:
                        call.reading = False
                        return None
                    wake = call.park_reader()
                call.link.reader_waiting()
                wake.acquire()

    def next_request(self) -> Any:
        """The next request message, None at the end; raises RpcError if cancelled."""
        call = self.call
        message = self._take_request()
        if message is None:
            if not call.active:
                raise RpcError("the RPC was cancelled or has ended")
            return None
        return call.decode(*message)

    def read_unary(self) -> Any:
        call = self.call
        message = self._take_request()
        if not call.active:
            raise Stop(None)
        if message is None:
            raise call.unary_request_missing()
        return call.decode(*message)

    def write(self, response: Any) -> bool:
        """Send one response message; blocks while the client is not reading."""
        call = self.call
        framed = call.frame(response)
        with call.lock:
            must_wait = call.active and call.write_blocked()
            active = call.active
        if must_wait:
            cond = call.condition()
            with cond:
                while call.active and call.write_blocked():
                    call.writer_waiting = True
                    cond.wait(1.0)
                call.writer_waiting = False
                active = call.active
        if not active:
            return False
        call.post_framed(framed)
        return True


def run_handler(call: CallCore, handler: Any, driver: SyncDriver) -> None:
    """Call a sync handler and send what it returns; raises ``Stop`` to end otherwise."""
    context = ServicerContext(call)
    if handler.request_streaming:
        request: Any = RequestIterator(driver)
        behavior = handler.stream_stream if handler.response_streaming else handler.stream_unary
    else:
        request = driver.read_unary()
        behavior = handler.unary_stream if handler.response_streaming else handler.unary_unary
    try:
        result = behavior(request, context)
        if handler.response_streaming:
            try:
                _stream_responses(driver, result)
            except (Stop, AbortError, RpcError):
                raise
            except Exception as exc:
                raise IterationError(exc) from exc
            framed = None
        elif call.code is None or call.code is StatusCode.OK:
            framed = call.frame(result)
        else:
            framed = None
    except Exception as exc:  # context.abort() raises a bare Exception, as grpcio's does
        raise call.handler_stopped(exc, aio=False) from None
    if call.active:
        call.finish(framed, call.code or StatusCode.OK, call.details)


def _stream_responses(driver: SyncDriver, responses: Any) -> None:
    iterator: Iterator[Any] = iter(responses)
    try:
        for response in iterator:
            if not driver.write(response):
                break
    finally:
        close = getattr(iterator, "close", None)
        if close is not None and not driver.call.active:
            close()


class RequestIterator:
    """The request stream of a client-streaming RPC, as a blocking iterator."""

    def __init__(self, driver: SyncDriver) -> None:
        self._driver = driver

    def __iter__(self) -> RequestIterator:
        return self

    def __next__(self) -> Any:
        message = self._driver.next_request()
        if message is None:
            raise StopIteration
        return message

    def next(self) -> Any:
        return self.__next__()


__all__ = ["RequestIterator", "SyncDriver"]
