"""Parsing and binding the addresses grpcio accepts.

``host:port``, ``[v6]:port``, ``localhost:port`` (both families, one port),
``[::]:port`` (dual-stack), ``unix:path``, ``unix:///abs/path``,
``unix-abstract:name``. Binding happens at once, in the caller's thread, so a
bad or busy address raises ``RuntimeError`` naming it.
"""

from __future__ import annotations

import os
import socket
import stat
from typing import List, Tuple

_BACKLOG = 1024


def _split_host_port(address: str) -> Tuple[str, int]:
    if address.startswith("["):
        host, sep, rest = address[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise RuntimeError(f"cannot parse address {address!r}: expected [host]:port")
        port_text = rest[1:]
    else:
        host, sep, port_text = address.rpartition(":")
        if not sep:
            raise RuntimeError(f"cannot parse address {address!r}: expected host:port")
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise RuntimeError(f"invalid port in address {address!r}")
    return host, int(port_text)


def _tcp_socket(family: int, host: str, port: int, reuse_port: bool) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port and hasattr(socket, "SO_REUSEPORT"):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            # "[::]" serves IPv4 too, as grpcio does; "[::1]" is IPv6 only.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if host == "::" else 1)
        sock.bind((host, port))
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind(address: str, reuse_port: bool = False) -> Tuple[List[socket.socket], int]:
    """Bind listening sockets for ``address``; return them and the port (0 for Unix)."""
    try:
        if address.startswith("unix-abstract:"):
            return [_unix_socket("\0" + address[len("unix-abstract:") :])], 0
        if address.startswith("unix:"):
            path = address[len("unix:") :]
            if path.startswith("//"):
                path = path[2:]
            if not path:
                raise RuntimeError(f"empty Unix socket path in {address!r}")
            return [_unix_socket(path)], 0
        host, port = _split_host_port(address)
        if host in ("localhost", ""):
            return _bind_localhost(host, port, reuse_port)
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, _, _, _, sockaddr = infos[0]
        sock = _tcp_socket(family, str(sockaddr[0]), port, reuse_port)
        return [sock], sock.getsockname()[1]
    except RuntimeError:
        raise
    except OSError as exc:
        raise RuntimeError(f"failed to bind to address {address!r}: {exc.strerror or exc}") from exc


def _bind_localhost(host: str, port: int, reuse_port: bool) -> Tuple[List[socket.socket], int]:
    """``localhost`` binds 127.0.0.1 and ::1 on one port; "" binds every address."""
    v4_host, v6_host = ("127.0.0.1", "::1") if host == "localhost" else ("0.0.0.0", "::")
    if host == "":
        sock = _tcp_socket(socket.AF_INET6, "::", port, reuse_port) if socket.has_ipv6 else None
        if sock is None:
            sock = _tcp_socket(socket.AF_INET, v4_host, port, reuse_port)
        return [sock], sock.getsockname()[1]
    first = _tcp_socket(socket.AF_INET, v4_host, port, reuse_port)
    port = first.getsockname()[1]
    socks = [first]
    if socket.has_ipv6:
        try:
            socks.append(_tcp_socket(socket.AF_INET6, v6_host, port, reuse_port))
        except OSError:
            pass  # no IPv6 loopback on this host: IPv4 alone, as grpcio does
    return socks, port


def _unix_socket(path: str) -> socket.socket:
    if not path.startswith("\0"):
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                os.unlink(path)  # a stale socket from an earlier run
        except FileNotFoundError:
            pass
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
