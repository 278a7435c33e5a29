"""
A Redis server of the tests' own, on a unix socket in a scratch directory
(:class:`clicktodial_redis.testing.RedisServer`: ``--port 0``, so inside ``unshare -n`` it is
reachable, unlike the machine's Redis on 127.0.0.1:6379), started once per session and
stopped by its PID. ``CLICKTODIAL_TEST_REDIS_URL`` names another server instead (the tests
use only keys under a prefix of their own, and delete only those). Without either, the tests
skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from clicktodial_redis.testing import RedisServer, delete_prefix, wait_until_ready

#: The database number the tests use on their own server.
TEST_DB = 9


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the Redis tests may not skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    """The URL of a Redis server only these tests use."""
    external = os.environ.get("CLICKTODIAL_TEST_REDIS_URL")
    if external:
        try:
            wait_until_ready(external, timeout=2)
        except redis.RedisError as e:
            _unavailable(f"no Redis at CLICKTODIAL_TEST_REDIS_URL: {e}")
        yield external
        return
    if not RedisServer.installed():
        _unavailable(
            "redis-server is not installed (Debian package redis-server) and"
            " CLICKTODIAL_TEST_REDIS_URL is not set"
        )
    # A short directory: a unix socket's path may not exceed about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="ctd-redis-") as directory:
        server = RedisServer(Path(directory), db=TEST_DB)
        try:
            yield server.start()
        finally:
            server.stop()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards (only those)."""
    prefix = f"ctdtest:{uuid.uuid4().hex}:"
    yield prefix
    delete_prefix(redis_url, prefix)
