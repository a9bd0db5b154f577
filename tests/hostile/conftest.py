"""Fixtures of the hostile-client suite: the server under attack, in a subprocess."""

from __future__ import annotations

from typing import Iterator

import pytest

from ._hostile import Target


@pytest.fixture(scope="module")
def target() -> Iterator[Target]:
    """A server with default options, shared by a module's tests (each test compares
    the server's figures before and after its own attack)."""
    server = Target()
    yield server
    server.close()
