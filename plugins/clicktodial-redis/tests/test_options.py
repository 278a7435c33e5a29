"""The [location:redis] options: defaults, and every bad key or value refused naming its key."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from zope.interface.verify import verifyObject

from clicktodial.store.errors import StoreConfigError, StoreUnavailable
from clicktodial.store.plugins import StoreEnvironment
from clicktodial.testing.fakes import (
    InlineReactor,
    failure_result_of,
    inline_thread_pool,
    success_result_of,
)
from clicktodial_redis import RedisLocationStore, RedisOptions, factory
from clicktodial_redis._compat import ILocationBackend, ILocationBackendFactory


def environment() -> StoreEnvironment:
    return StoreEnvironment(
        reactor=InlineReactor(), realm="example.com", make_thread_pool=inline_thread_pool
    )


def test_defaults() -> None:
    """An empty section means the local Redis, DB 0, prefix clicktodial:, 4 threads."""
    assert RedisOptions.parse({}) == RedisOptions(
        url="redis://127.0.0.1:6379/0",
        key_prefix="clicktodial:",
        threads=4,
        socket_timeout=5.0,
        connect_timeout=5.0,
        expiry_events="configure",
    )


def test_every_key_parsed() -> None:
    """Every documented key is read and converted."""
    assert RedisOptions.parse(
        {
            "url": " unix:///run/redis/redis.sock?db=3 ",
            "key_prefix": "pbx1:",
            "threads": "8",
            "socket_timeout": "0.5",
            "connect_timeout": "2",
            "expiry_events": "Check",
        }
    ) == RedisOptions(
        url="unix:///run/redis/redis.sock?db=3",
        key_prefix="pbx1:",
        threads=8,
        socket_timeout=0.5,
        connect_timeout=2.0,
        expiry_events="check",
    )


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("url", "http://127.0.0.1:6379", "url must start with redis://, rediss:// or unix://"),
        ("url", "127.0.0.1:6379", "url must start with"),
        ("url", "redis://127.0.0.1:6379/zero", "url is not a valid Redis URL: the path must"),
        ("url", "redis://127.0.0.1:port/0", "url is not a valid Redis URL"),
        ("url", "unix://", "url is not a valid Redis URL: a unix:// URL needs"),
        ("key_prefix", "", "key_prefix must be 1 to 100 printable characters"),
        ("key_prefix", "a b", "key_prefix must be"),
        ("key_prefix", "ctd*", "key_prefix must be"),
        ("key_prefix", "x" * 101, "key_prefix must be"),
        ("threads", "0", "threads must be an integer from 1 to 64, not '0'"),
        ("threads", "65", "threads must be an integer from 1 to 64"),
        ("threads", "four", "threads must be an integer"),
        ("socket_timeout", "0", "socket_timeout must be a number of seconds from 0.1 to 300"),
        ("socket_timeout", "nan", "socket_timeout must be"),
        ("connect_timeout", "-1", "connect_timeout must be"),
        ("connect_timeout", "inf", "connect_timeout must be"),
        ("expiry_events", "yes", "expiry_events must be one of configure, check, off"),
    ],
)
def test_bad_value_refused_naming_its_key(key: str, value: str, message: str) -> None:
    """A bad value fails with StoreConfigError whose key is the option's."""
    with pytest.raises(StoreConfigError) as raised:
        factory.create({key: value}, environment())
    assert raised.value.key == key
    assert message in str(raised.value)


def test_unknown_key_refused_listing_the_allowed() -> None:
    """A key the plugin does not know (a typo) fails naming it and the valid ones."""
    with pytest.raises(StoreConfigError) as raised:
        factory.create({"urll": "redis://127.0.0.1"}, environment())
    assert raised.value.key == "urll"
    assert str(raised.value) == (
        "unknown option 'urll' for location backend 'redis' (allowed: connect_timeout,"
        " expiry_events, key_prefix, socket_timeout, threads, url)"
    )


def test_password_in_url_never_echoed() -> None:
    """A URL may hold a password: the error does not repeat the URL."""
    with pytest.raises(StoreConfigError) as raised:
        factory.create({"url": "redis://:s3cret@127.0.0.1:6379/db"}, environment())
    assert raised.value.key == "url"
    assert "s3cret" not in str(raised.value)
    with pytest.raises(StoreConfigError) as raised:
        factory.create({"url": "http://:s3cret@127.0.0.1"}, environment())
    assert "s3cret" not in str(raised.value)


def test_factory_builds_an_unstarted_backend() -> None:
    """create() connects to nothing: it returns a location backend to be started."""
    assert verifyObject(ILocationBackendFactory, factory)
    store = factory.create({"url": "redis://127.0.0.1:1/0"}, environment())
    assert isinstance(store, RedisLocationStore)
    assert verifyObject(ILocationBackend, store)


def test_entry_point_names_the_factory() -> None:
    """Installed, the package registers `redis` in clicktodial.location_backends."""
    try:
        dist = distribution("clicktodial-redis")
    except PackageNotFoundError:
        pytest.skip("clicktodial-redis is not installed (pip install ./plugins/clicktodial-redis)")
    [entry_point] = [e for e in dist.entry_points if e.group == "clicktodial.location_backends"]
    assert (entry_point.name, entry_point.value) == ("redis", "clicktodial_redis:factory")
    assert entry_point.load() is factory


def test_unreachable_redis_fails_start_with_store_unavailable(tmp_path: Path) -> None:
    """No server at the URL: start() fails with StoreUnavailable (the daemon then stops
    with one line), and stop() still works."""
    store = factory.create(
        {"url": f"unix://{tmp_path}/nothing.sock", "connect_timeout": "1"}, environment()
    )
    failure = failure_result_of(store.start(), StoreUnavailable)
    assert "redis: ConnectionError" in str(failure.value)
    success_result_of(store.stop())
