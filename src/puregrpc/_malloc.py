"""glibc's allocator, tuned for large messages (``puregrpc serve`` applies it).

Measured with 1 MiB server-streaming messages on Linux: each message's buffers
(protobuf's, the output's) are allocated and freed in turn, and with glibc's defaults
the freed memory goes back to the kernel (buffers over the mmap threshold are
unmapped; a heap top over the trim threshold is trimmed) only to be faulted in again:
about 500 page faults per MiB sent, which took twice the server's Python time in system
time, and halved its throughput. Serving large buffers from the heap (mmap threshold
16 MiB) and keeping up to 32 MiB free at a heap's top (trim threshold) removes them.
That is what ``MALLOC_MMAP_THRESHOLD_=16777216 MALLOC_TRIM_THRESHOLD_=33554432`` in the
environment does for any process; ``tune()`` does it from inside one.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

_LOGGER = logging.getLogger("puregrpc")

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20
TRIM_THRESHOLD = 32 << 20
ENV_OFF = "PUREGRPC_MALLOC_TUNING"  # "0": leave the allocator alone


def tune() -> bool:
    """Apply the thresholds where the C library is glibc, unless the environment sets
    them already or ``PUREGRPC_MALLOC_TUNING=0``; True if they were applied."""
    if os.environ.get(ENV_OFF) == "0" or not sys.platform.startswith("linux"):
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        return False  # the operator's choice wins
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        if not ctypes.util.find_library("c") or not hasattr(libc, "gnu_get_libc_version"):
            return False  # musl and others: mallopt is glibc's
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1 and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1)
    _LOGGER.debug("glibc malloc thresholds %s", "set" if ok else "refused")
    return ok
