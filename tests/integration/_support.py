"""Start a puregrpc server on ``localhost:0``; make grpcio channels; a raw ``h2`` client."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import grpc

import puregrpc

# Every client call in this suite carries a timeout so that a bug never hangs it.
TIMEOUT = 10.0


class Running:
    """A started server and the address to reach it."""

    def __init__(self, server: puregrpc.Server, port: int, pool: ThreadPoolExecutor) -> None:
        self.server = server
        self.port = port
        self.pool = pool
        self.target = f"localhost:{port}"

    def channel(self, **kwargs: Any) -> grpc.Channel:
        return grpc.insecure_channel(self.target, **kwargs)


@contextlib.contextmanager
def serve(
    setup: Callable[[puregrpc.Server], None] | None = None,
    *,
    workers: int = 16,
    host: str = "localhost",
    **server_kwargs: Any,
) -> Iterator[Running]:
    """A puregrpc server with ``setup(server)`` applied before ``start()``."""
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="handler")
    server = puregrpc.server(pool, **server_kwargs)
    if setup is not None:
        setup(server)
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    try:
        yield Running(server, port, pool)
    finally:
        server.stop(0).wait(TIMEOUT)
        pool.shutdown(wait=False)


@contextlib.contextmanager
def channel(running: Running, **kwargs: Any) -> Iterator[grpc.Channel]:
    ch = running.channel(**kwargs)
    try:
        yield ch
    finally:
        ch.close()


def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


class Recorder:
    """Thread-safe event log for handlers and callbacks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.events: List[Any] = []
        self._changed = threading.Condition(self._lock)

    def add(self, event: Any) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def wait_for(self, event: Any, timeout: float = TIMEOUT) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: event in self.events, timeout)

    def __contains__(self, event: Any) -> bool:
        with self._lock:
            return event in self.events


class LogCapture(logging.Handler):
    """Collects the "puregrpc" logger's records."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: List[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.DEBUG) -> List[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextlib.contextmanager
def capture_log() -> Iterator[LogCapture]:
    handler = LogCapture()
    logger = logging.getLogger("puregrpc")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


# --- the h2 library as a raw client ------------------------------------------------


def _load_h2() -> Any:
    """The ``h2`` library; loaded under another name if a ``h2`` package on ``sys.path``
    (e.g. a test folder named ``tests/h2``) shadows it."""
    try:
        import h2.config
        import h2.connection
        import h2.events  # noqa: F401

        return sys.modules["h2"]
    except ImportError:
        pass
    for entry in sys.path:
        init = os.path.join(entry or ".", "h2", "__init__.py")
        if os.path.exists(os.path.join(entry or ".", "h2", "connection.py")):
            name = "_h2_library"
            if name in sys.modules:
                return sys.modules[name]
            spec = importlib.util.spec_from_file_location(
                name, init, submodule_search_locations=[os.path.dirname(init)]
            )
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            for sub in ("config", "connection", "events", "errors"):
                importlib.import_module(f"{name}.{sub}")
            return module
    raise ImportError("the h2 library is not installed")


H2 = _load_h2()

GRPC_REQUEST: List[Tuple[str, str]] = [
    (":method", "POST"),
    (":scheme", "http"),
    (":path", "/puregrpc.test.EchoService/Unary"),
    (":authority", "localhost"),
    ("content-type", "application/grpc"),
    ("te", "trailers"),
]


class RawResponse:
    def __init__(self) -> None:
        self.headers: List[Tuple[str, str]] = []
        self.trailers: List[Tuple[str, str]] = []
        self.data = b""
        self.ended = False
        self.reset: int | None = None

    @property
    def all_headers(self) -> Dict[str, str]:
        return dict(self.headers + self.trailers)


class RawClient:
    """A blocking HTTP/2 client on a real socket, driven by the ``h2`` library."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("localhost", port), timeout=TIMEOUT)
        config = H2.config.H2Configuration(client_side=True, header_encoding="utf-8", validate_outbound_headers=False)
        self.conn = H2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        self.sock.sendall(self.conn.data_to_send())

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def request(self, headers: Sequence[Tuple[str, str]], body: bytes = b"", end_stream: bool = True) -> RawResponse:
        """Send one request and read until its stream ends (or is reset)."""
        sid = self.conn.get_next_available_stream_id()
        self.conn.send_headers(sid, list(headers), end_stream=end_stream and not body)
        if body:
            self.conn.send_data(sid, body, end_stream=end_stream)
        self.sock.sendall(self.conn.data_to_send())
        response = RawResponse()
        deadline = time.monotonic() + TIMEOUT
        while not response.ended and response.reset is None:
            if time.monotonic() > deadline:
                raise TimeoutError("no complete response")
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("server closed the connection")
            for event in self.conn.receive_data(data):
                if getattr(event, "stream_id", None) != sid:
                    continue
                kind = type(event).__name__
                if kind == "ResponseReceived":
                    response.headers = list(event.headers)
                elif kind == "TrailersReceived":
                    response.trailers = list(event.headers)
                elif kind == "DataReceived":
                    response.data += event.data
                    self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                elif kind == "StreamEnded":
                    response.ended = True
                elif kind == "StreamReset":
                    response.reset = event.error_code
            self.sock.sendall(self.conn.data_to_send())
        return response


def grpc_frame(payload: bytes, compressed: bool = False) -> bytes:
    """One length-prefixed gRPC message."""
    return bytes([1 if compressed else 0]) + len(payload).to_bytes(4, "big") + payload


def grpc_messages(data: bytes) -> List[Tuple[bool, bytes]]:
    """Split a response body into (compressed flag, payload) messages."""
    out: List[Tuple[bool, bytes]] = []
    pos = 0
    while pos < len(data):
        flag = data[pos]
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        out.append((flag == 1, data[pos + 5 : pos + 5 + length]))
        pos += 5 + length
    assert pos == len(data), "truncated gRPC message"
    return out


def grpc_request(path: str, *extra: Tuple[str, str]) -> List[Tuple[str, str]]:
    headers = [(k, path if k == ":path" else v) for k, v in GRPC_REQUEST]
    return headers + list(extra)


# --- raw HTTP/2 frames, for what no client library will send or accept ----------------

Frame = Tuple[int, int, int, bytes]  # type, flags, stream id, payload

# The client preface and an empty SETTINGS frame.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes.fromhex("000000040000000000")


def frame_bytes(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes([kind, flags]) + stream_id.to_bytes(4, "big") + payload


def raw_request(stream_id: int, path: str, message: bytes) -> bytes:
    """HEADERS and one DATA frame (END_STREAM) of a unary gRPC request."""
    import hpack

    block = hpack.Encoder().encode(grpc_request(path))
    return frame_bytes(0x1, 0x4, stream_id, block) + frame_bytes(0x0, 0x1, stream_id, grpc_frame(message))


def split_frames(data: bytes) -> Tuple[List[Frame], bytes]:
    """The whole frames at the start of ``data``, and what is left of a partial one."""
    frames: List[Frame] = []
    while len(data) >= 9 and len(data) >= 9 + int.from_bytes(data[:3], "big"):
        length = int.from_bytes(data[:3], "big")
        frames.append((data[3], data[4], int.from_bytes(data[5:9], "big") & 0x7FFFFFFF, data[9 : 9 + length]))
        data = data[9 + length :]
    return frames, data


def read_frames(sock: socket.socket, until: Callable[[List[Frame]], bool], timeout: float = TIMEOUT) -> List[Frame]:
    """Read frames until ``until(frames)`` holds, the peer closes, or ``timeout`` passes."""
    frames: List[Frame] = []
    buffer = b""
    end = time.monotonic() + timeout
    sock.settimeout(0.2)
    while not until(frames) and time.monotonic() < end:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            continue
        if not chunk:
            break
        more, buffer = split_frames(buffer + chunk)
        frames += more
    return frames
