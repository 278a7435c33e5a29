"""
A throw-away ``redis-server`` for tests and benchmarks: no TCP port (``--port 0``), a unix
socket in a directory of the caller's, nothing persisted; stopped by its PID.

Inside ``unshare -n`` (where clicktodial's tests run) the machine's Redis on 127.0.0.1:6379
is in another network namespace: a server of one's own on a unix socket is reachable there.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import redis


class RedisServer:
    """
    ``redis-server`` on ``directory/redis.sock``, started by :meth:`start`.

    :ivar url: ``unix://.../redis.sock?db=DB`` once started.
    """

    def __init__(self, directory: Path, db: int = 0) -> None:
        self.directory = directory
        self.socket = directory / "redis.sock"
        self.url = f"unix://{self.socket}?db={db}"
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def installed() -> bool:
        """Whether ``redis-server`` is on ``PATH`` (Debian package ``redis-server``)."""
        return shutil.which("redis-server") is not None

    def start(self, timeout: float = 15.0) -> str:
        """Start the server and wait until it answers PING; its URL."""
        server = shutil.which("redis-server")
        if server is None:
            raise FileNotFoundError("redis-server is not installed")
        # A unix socket's path may not exceed about 100 bytes: keep directory short.
        self.process = subprocess.Popen(
            [
                server,
                "--port",
                "0",
                "--unixsocket",
                str(self.socket),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self.directory),
                "--save",
                "",
                "--appendonly",
                "no",
                "--logfile",
                str(self.directory / "redis.log"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until_ready(self.url, self.process, timeout)
        return self.url

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s (by PID); nothing if it was not started."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def wait_until_ready(
    url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 15.0
) -> None:
    """
    Wait until the Redis at ``url`` answers PING.

    :raises redis.ConnectionError: it did not within ``timeout`` seconds.
    :raises RuntimeError: ``process`` (the server) exited meanwhile.
    """
    client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if process is not None and process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {process.returncode}") from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)  # a subprocess starting: nothing to wait on but its socket
    finally:
        client.close()


def delete_prefix(url: str, prefix: str) -> int:
    """Delete the keys starting with ``prefix`` (SCAN, not KEYS); how many there were."""
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        if keys:
            client.delete(*keys)
        return len(keys)
    finally:
        client.close()
