"""
``[location] backend = redis``: the factory, and the ``[location:redis]`` options it takes.

Every option is checked here; a bad one raises :class:`StoreConfigError` naming its key, and
the daemon turns that into one line naming file, section and key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

import redis
from attrs import frozen
from redis.backoff import ExponentialBackoff
from redis.retry import Retry
from zope.interface import implementer

from clicktodial.store.errors import StoreConfigError
from clicktodial.store.plugins import StoreEnvironment
from clicktodial_redis._compat import ILocationBackend, ILocationBackendFactory
from clicktodial_redis.store import EXPIRY_EVENT_MODES, RedisLocationStore

#: How many times redis-py tries a command again after a connection error or timeout.
RETRIES = 2

#: The URL schemes redis-py connects with: TCP, TLS, unix socket.
URL_SCHEMES = ("redis", "rediss", "unix")


@frozen
class RedisOptions:
    """
    The ``[location:redis]`` section, validated.

    :ivar url: ``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``, ``rediss://`` (TLS) or
        ``unix:///PATH?db=N``.
    :ivar key_prefix: put before every key and channel name: several deployments may
        share one Redis database with different prefixes.
    :ivar threads: threads (and connections) running Redis commands.
    :ivar socket_timeout: seconds a command may wait for Redis's answer.
    :ivar connect_timeout: seconds a connection attempt may take.
    :ivar expiry_events: ``configure``, ``check`` or ``off`` (README.md, "Notifications").
    """

    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "clicktodial:"
    threads: int = 4
    socket_timeout: float = 5.0
    connect_timeout: float = 5.0
    expiry_events: str = "configure"

    #: Every key the section may have.
    KEYS = ("url", "key_prefix", "threads", "socket_timeout", "connect_timeout", "expiry_events")

    @classmethod
    def parse(cls, options: Mapping[str, str]) -> RedisOptions:
        """
        :raises StoreConfigError: for an unknown key or a bad value, naming the key.
        """
        for key in sorted(options):
            if key not in cls.KEYS:
                raise StoreConfigError(
                    f"unknown option {key!r} for location backend 'redis'"
                    f" (allowed: {', '.join(sorted(cls.KEYS))})",
                    key=key,
                )
        default = cls()
        return cls(
            url=_url(options.get("url", default.url)),
            key_prefix=_key_prefix(options.get("key_prefix", default.key_prefix)),
            threads=_integer(options, "threads", default.threads, 1, 64),
            socket_timeout=_seconds(options, "socket_timeout", default.socket_timeout),
            connect_timeout=_seconds(options, "connect_timeout", default.connect_timeout),
            expiry_events=_choice(
                options, "expiry_events", default.expiry_events, EXPIRY_EVENT_MODES
            ),
        )


def _url(text: str) -> str:
    url = text.strip()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in URL_SCHEMES:
        # Never echo the URL: it may hold a password.
        raise StoreConfigError(
            "url must start with redis://, rediss:// or unix://"
            + (f", not {scheme}://" if scheme else ""),
            key="url",
        )
    try:
        parsed = urlsplit(url)
        redis.connection.parse_url(url)
        # redis-py ignores a database path that is not a number: refuse it.
        if scheme == "unix":
            if not parsed.path:
                raise ValueError("a unix:// URL needs the socket's path")
        elif not re.fullmatch(r"/?(\d{1,5})?", parsed.path):
            raise ValueError("the path must be the database number, e.g. /0")
    except ValueError as e:
        raise StoreConfigError(f"url is not a valid Redis URL: {e}", key="url") from e
    return url


def _key_prefix(text: str) -> str:
    if (
        not 1 <= len(text) <= 100
        or any(c.isspace() or not c.isprintable() for c in text)
        or any(c in text for c in "*?[]")
    ):
        raise StoreConfigError(
            f"key_prefix must be 1 to 100 printable characters without spaces or glob"
            f" characters (* ? [ ]), not {text!r}",
            key="key_prefix",
        )
    return text


def _integer(options: Mapping[str, str], key: str, default: int, lowest: int, highest: int) -> int:
    text = options.get(key)
    if text is None:
        return default
    try:
        number = int(text.strip())
    except ValueError:
        number = lowest - 1
    if not lowest <= number <= highest:
        raise StoreConfigError(
            f"{key} must be an integer from {lowest} to {highest}, not {text!r}", key=key
        )
    return number


def _seconds(options: Mapping[str, str], key: str, default: float) -> float:
    text = options.get(key)
    if text is None:
        return default
    try:
        seconds = float(text.strip())
    except ValueError:
        seconds = -1.0
    if not 0.1 <= seconds <= 300:  # also refuses nan and inf
        raise StoreConfigError(
            f"{key} must be a number of seconds from 0.1 to 300, not {text!r}", key=key
        )
    return seconds


def _choice(options: Mapping[str, str], key: str, default: str, choices: tuple[str, ...]) -> str:
    text = options.get(key)
    if text is None:
        return default
    value = text.strip().lower()
    if value not in choices:
        raise StoreConfigError(f"{key} must be one of {', '.join(choices)}, not {text!r}", key=key)
    return value


@implementer(ILocationBackendFactory)
class RedisLocationBackendFactory:
    """``[location] backend = redis``; options from the ``[location:redis]`` section."""

    def create(self, options: Mapping[str, str], environment: StoreEnvironment) -> ILocationBackend:
        """Build a (not yet started) :class:`RedisLocationStore`."""
        parsed = RedisOptions.parse(options)
        return build_store(parsed, environment)


def build_store(options: RedisOptions, environment: StoreEnvironment) -> RedisLocationStore:
    """A store from validated options; the client connects lazily, at start."""
    client = redis.Redis.from_url(
        options.url,
        socket_timeout=options.socket_timeout,
        socket_connect_timeout=options.connect_timeout,
        # One connection per pool thread, one for the notification thread.
        max_connections=options.threads + 1,
        # A dropped connection or a timeout is retried twice after a short back-off (at most
        # 0.5 s) before the operation fails with StoreUnavailable: bounded, so a stop during
        # start-up against an unreachable Redis waits for about three connect_timeouts.
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
    )
    return RedisLocationStore(
        environment.reactor,  # type: ignore[arg-type]
        client,
        environment.make_thread_pool("clicktodial-redis", options.threads),
        key_prefix=options.key_prefix,
        expiry_events=options.expiry_events,
    )
