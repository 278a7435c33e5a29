"""The keys the store writes are the ones README.md documents, and Redis expires them."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import redis

from clicktodial.store.values import BindingChanges, ContactChange
from clicktodial.testing.fakes import InlineReactor, InlineThreadPool, success_result_of
from clicktodial_redis import RedisLocationStore

pytestmark = pytest.mark.interop

AOR = "sip:alice@example.com"
NOW = 1_000_000.0


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def store(redis_url: str, key_prefix: str) -> Iterator[RedisLocationStore]:
    store = RedisLocationStore(
        InlineReactor(),
        redis.Redis.from_url(redis_url),
        InlineThreadPool(),
        key_prefix=key_prefix,
        expiry_events="off",
    )
    success_result_of(store.start())
    yield store
    store.stop()


def test_one_hash_per_aor_with_the_ttl_of_its_latest_binding(
    store: RedisLocationStore, client: redis.Redis, key_prefix: str
) -> None:
    """An AOR's bindings are one hash (field = binding key, value = JSON) whose TTL is its
    latest binding's remaining time; the sorted sets hold the expiry times."""
    success_result_of(
        store.update_bindings(
            AOR,
            BindingChanges(
                call_id="c",
                cseq=1,
                contacts=(
                    ContactChange("sip:alice@192.0.2.1", 60),
                    ContactChange("sip:alice@192.0.2.2", 3600),
                ),
            ),
            NOW,
        )
    )
    key = key_prefix + "bindings:" + AOR
    fields = client.hgetall(key)
    assert sorted(fields) == ["uri:sip:alice@192.0.2.1", "uri:sip:alice@192.0.2.2"]
    assert json.loads(fields["uri:sip:alice@192.0.2.2"])["expires_at"] == NOW + 3600
    assert 3_590_000 < client.pttl(key) <= 3_600_000
    assert client.zscore(key_prefix + "aors", AOR) == NOW + 3600
    assert (
        client.zscore(
            key_prefix + "expiry",
            json.dumps([AOR, "uri:sip:alice@192.0.2.1"], separators=(",", ":")),
        )
        == NOW + 60
    )


def test_an_aor_without_bindings_leaves_no_key(
    store: RedisLocationStore, client: redis.Redis, key_prefix: str
) -> None:
    """Removing the last binding deletes the AOR's hash and its set entries."""
    contact = ContactChange("sip:alice@192.0.2.1", 60)
    success_result_of(
        store.update_bindings(AOR, BindingChanges(call_id="c", cseq=1, contacts=(contact,)), NOW)
    )
    success_result_of(
        store.update_bindings(
            AOR,
            BindingChanges(
                call_id="c", cseq=2, contacts=(ContactChange("sip:alice@192.0.2.1", 0),)
            ),
            NOW,
        )
    )
    assert sorted(client.scan_iter(match=key_prefix + "*")) == []
