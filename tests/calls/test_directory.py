"""The call controller's cache of users and bindings (clicktodial.calls.directory)."""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from zope.interface.verify import verifyObject

from clicktodial.calls.directory import CachedDirectory
from clicktodial.interfaces import IKnownLookups, ILocationStore
from clicktodial.store.values import Binding, BindingChanges, ContactChange, User

AOR = "sip:bob@example.com"


def binding(contact: str = "sip:bob@127.0.0.1:5070", expires_at: float = 3600.0) -> Binding:
    return Binding(aor=AOR, contact=contact, expires_at=expires_at, call_id="c", cseq=1)


class FakeStore:
    """Users and bindings whose look-ups wait until the test fires them."""

    def __init__(self) -> None:
        self.bindings: dict[str, list[Binding]] = {AOR: [binding()]}
        self.users: dict[str, User] = {"bob": User("bob")}
        self.queries: list[tuple[str, Deferred[Any]]] = []
        self.updates: list[Deferred[list[Binding]]] = []

    def get_user(self, username: str) -> Deferred[User | None]:
        d: Deferred[User | None] = Deferred()
        self.queries.append((username, d))
        return d

    def get_bindings(self, aor: str, now: float) -> Deferred[list[Binding]]:
        d: Deferred[list[Binding]] = Deferred()
        self.queries.append((aor, d))
        return d

    def answer(self) -> None:
        """Fire every look-up waiting, with the current contents."""
        queries, self.queries = self.queries, []
        for key, d in queries:
            d.callback(
                self.bindings.get(key, []) if key.startswith("sip:") else self.users.get(key)
            )

    def update_bindings(
        self, aor: str, changes: BindingChanges, now: float
    ) -> Deferred[list[Binding]]:
        d: Deferred[list[Binding]] = Deferred()
        self.updates.append(d)
        return d

    def remove_all(self, aor: str) -> Deferred[int]:
        count = len(self.bindings.pop(aor, []))
        return succeed(count)

    def purge_expired(self, now: float) -> Deferred[int]:
        return succeed(0)

    def registered_aors(self, now: float) -> Deferred[list[str]]:
        return succeed(sorted(self.bindings))

    def all_bindings(self, now: float) -> Deferred[list[Binding]]:
        return succeed([b for bs in self.bindings.values() for b in bs])


def make(ttl: float = 2.0) -> tuple[Clock, FakeStore, CachedDirectory]:
    clock = Clock()
    clock.advance(1000)
    store = FakeStore()
    return clock, store, CachedDirectory(clock, store, store, ttl)  # type: ignore[arg-type]


def result(d: Deferred[Any]) -> Any:
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if isinstance(results[0], Failure):
        results[0].raiseException()
    return results[0]


def deregister() -> BindingChanges:
    return BindingChanges(
        call_id="r", cseq=2, contacts=(ContactChange("sip:bob@127.0.0.1:5070", 0),)
    )


def test_provides_ilocationstore() -> None:
    verifyObject(ILocationStore, make()[2])
    verifyObject(IKnownLookups, make()[2])


def test_known_lookups_answer_what_memory_holds_at_once_and_nothing_else() -> None:
    """known_user/known_bindings answer as get_user/get_bindings would from memory (expired
    bindings dropped); None when nothing is kept, expired, or with ttl 0 (ask the store)."""
    clock, store, directory = make(ttl=2.0)
    now = clock.seconds()
    assert directory.known_user("bob") is None
    assert directory.known_bindings(AOR, now) is None
    assert store.queries == []
    store.bindings[AOR] = [binding(expires_at=now + 1), binding("sip:bob@127.0.0.2", now + 60)]
    user, bindings = directory.get_user("bob"), directory.get_bindings(AOR, now)
    store.answer()
    assert directory.known_user("bob") == result(user) == User("bob")
    assert directory.known_bindings(AOR, now) == result(bindings)
    clock.advance(1.5)
    assert directory.known_bindings(AOR, clock.seconds()) == [
        binding("sip:bob@127.0.0.2", now + 60)
    ]
    assert result(directory.get_bindings(AOR, clock.seconds())) == [
        binding("sip:bob@127.0.0.2", now + 60)
    ]
    clock.advance(0.6)
    assert directory.known_user("bob") is None
    assert directory.known_bindings(AOR, clock.seconds()) is None
    clock, store, uncached = make(ttl=0)
    uncached.get_user("bob")
    store.answer()
    assert uncached.known_user("bob") is None


def test_bindings_come_from_memory_within_the_ttl_then_from_the_store() -> None:
    clock, store, directory = make(ttl=2.0)
    first = directory.get_bindings(AOR, clock.seconds())
    store.answer()
    assert result(first) == [binding()]
    clock.advance(1.9)
    assert result(directory.get_bindings(AOR, clock.seconds())) == [binding()]
    assert store.queries == []
    clock.advance(0.2)
    again = directory.get_bindings(AOR, clock.seconds())
    assert len(store.queries) == 1
    store.answer()
    assert result(again) == [binding()]


def test_concurrent_lookups_share_one_store_query() -> None:
    clock, store, directory = make()
    waiting = [directory.get_bindings(AOR, clock.seconds()) for _ in range(5)]
    assert len(store.queries) == 1
    store.answer()
    assert [result(d) for d in waiting] == [[binding()]] * 5


def test_a_failed_lookup_fails_every_waiter_and_is_not_kept() -> None:
    clock, store, directory = make()
    waiting = [directory.get_bindings(AOR, clock.seconds()) for _ in range(2)]
    store.queries.pop()[1].errback(RuntimeError("database down"))
    for d in waiting:
        assert isinstance(d.result, Failure)
        d.addErrback(lambda f: None)
    directory.get_bindings(AOR, clock.seconds())
    assert len(store.queries) == 1


def test_a_deregistration_handled_here_takes_effect_at_once() -> None:
    clock, store, directory = make(ttl=60.0)
    directory.get_bindings(AOR, clock.seconds())
    store.answer()
    updated = directory.update_bindings(AOR, deregister(), clock.seconds())
    store.bindings[AOR] = []
    store.updates.pop().callback([])
    assert result(updated) == []
    after = directory.get_bindings(AOR, clock.seconds())
    store.answer()
    assert result(after) == []


def test_a_lookup_running_during_a_registration_is_not_kept() -> None:
    clock, store, directory = make(ttl=60.0)
    directory.update_bindings(AOR, deregister(), clock.seconds())
    # Read while the REGISTER's transaction runs: may see the old rows.
    during = directory.get_bindings(AOR, clock.seconds())
    store.answer()
    assert result(during) == [binding()]
    store.bindings[AOR] = []
    store.updates.pop().callback([])
    after = directory.get_bindings(AOR, clock.seconds())
    assert len(store.queries) == 1, "the old rows were cached"
    store.answer()
    assert result(after) == []


def test_a_lookup_started_before_a_registration_and_answered_after_is_not_kept() -> None:
    clock, store, directory = make(ttl=60.0)
    before = directory.get_bindings(AOR, clock.seconds())
    directory.remove_all(AOR)
    store.answer()
    assert result(before) == []
    directory.get_bindings(AOR, clock.seconds())
    assert len(store.queries) == 1


def test_cached_bindings_past_their_expiry_are_never_returned() -> None:
    clock, store, directory = make(ttl=60.0)
    store.bindings[AOR] = [
        binding("sip:bob@127.0.0.1:5070", clock.seconds() + 1),
        binding("sip:bob@127.0.0.1:5072", clock.seconds() + 100),
    ]
    directory.get_bindings(AOR, clock.seconds())
    store.answer()
    clock.advance(1)
    contacts = [b.contact for b in result(directory.get_bindings(AOR, clock.seconds()))]
    assert contacts == ["sip:bob@127.0.0.1:5072"]


def test_users_are_cached_but_unknown_users_are_not() -> None:
    clock, store, directory = make()
    bob = directory.get_user("bob")
    nobody = directory.get_user("carol")
    store.answer()
    assert result(bob) == User("bob")
    assert result(nobody) is None
    assert result(directory.get_user("bob")) == User("bob")
    directory.get_user("carol")
    assert [key for key, _ in store.queries] == ["carol"]


def test_a_disabled_user_is_seen_within_the_ttl() -> None:
    clock, store, directory = make(ttl=2.0)
    directory.get_user("bob")
    store.answer()
    store.users["bob"] = User("bob", disabled=True)
    clock.advance(2.0)
    later = directory.get_user("bob")
    store.answer()
    assert result(later).disabled


def test_ttl_zero_passes_every_lookup_through() -> None:
    clock, store, directory = make(ttl=0)
    for _ in range(3):
        directory.get_bindings(AOR, clock.seconds())
        directory.get_user("bob")
        store.answer()
    assert directory.cached == 0
    assert store.queries == []


def test_old_entries_are_swept() -> None:
    clock, store, directory = make(ttl=1.0)
    for n in range(50):
        store.bindings[f"sip:u{n}@example.com"] = []
        directory.get_bindings(f"sip:u{n}@example.com", clock.seconds())
        store.answer()
    clock.advance(5)
    directory.get_bindings(AOR, clock.seconds())
    store.answer()
    assert directory.cached == 1
