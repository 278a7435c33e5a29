"""
A Redis server of the tests' own, on a unix socket in a scratch directory.

``redis-server`` is started once per session with ``--port 0`` (no TCP: inside ``unshare -n``
the machine's Redis on 127.0.0.1:6379 is in another network namespace and unreachable anyway)
and killed by its PID at the end. ``CLICKTODIAL_TEST_REDIS_URL`` names another server instead
(its DB 9 is used, and only keys under each test's own prefix are touched). Without either,
the tests skip, except under CI (``CI=true``), where they fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

#: The database number the tests use on a server named by CLICKTODIAL_TEST_REDIS_URL.
TEST_DB = 9


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{reason} (CI=true: the Redis tests may not skip)")
    pytest.skip(reason)


def _wait_until_ready(url: str, process: subprocess.Popen[bytes] | None,
                      timeout: float = 15.0) -> None:
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if process is not None and process.poll() is not None:
                    raise RuntimeError(
                        f"redis-server exited with {process.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # a subprocess starting: nothing to wait on but its socket
    finally:
        client.close()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a Redis server only these tests use (DB 9)."""
    external = os.environ.get("CLICKTODIAL_TEST_REDIS_URL")
    if external:
        try:
            _wait_until_ready(external, None, timeout=2)
        except redis.RedisError as e:
            _unavailable(f"no Redis at CLICKTODIAL_TEST_REDIS_URL: {e}")
        yield external
        return
    server = shutil.which("redis-server")
    if server is None:
        _unavailable("redis-server is not installed (Debian package redis-server) and"
                     " CLICKTODIAL_TEST_REDIS_URL is not set")
    # A short path: a unix socket path may not exceed about 100 bytes.
    directory = Path(tmp_path_factory.mktemp("redis"))
    socket = directory / "redis.sock"
    process = subprocess.Popen(
        [str(server), "--port", "0", "--unixsocket", str(socket), "--unixsocketperm", "700",
         "--dir", str(directory), "--save", "", "--appendonly", "no",
         "--databases", "16", "--logfile", str(directory / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"unix://{socket}?db={TEST_DB}"
        _wait_until_ready(url, process)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A key prefix no other test uses; its keys are deleted afterwards (only those)."""
    prefix = f"ctdtest:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()
