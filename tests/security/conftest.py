"""Fixtures for the security tests."""

from __future__ import annotations

import pytest

from tests.services import port_open, unavailable


@pytest.fixture
def redis_available() -> None:
    """Redis on 127.0.0.1:6379 (fails under CI=true when missing, skips elsewhere)."""
    if not port_open("127.0.0.1", 6379):
        unavailable("Redis on 127.0.0.1:6379")
