"""
Contract test suites for store backends, one mixin per interface.

Every backend, built-in or third-party, must pass the suites of the stores it provides. Each
suite is a plain pytest class; combine it with a class that says how to build the store it
tests. The fixture protocol: one method per suite, each returning a store that is **not
started yet**, built from ``environment``:

============================  ==================================  ===========================
suite                         method to define                    the store it returns
============================  ==================================  ===========================
:class:`UserStoreContract`    ``make_user_store(environment,      provides ``IUserStore``,
                              request)``                          ``start()``, ``stop()``
:class:`LocationStoreContract`  ``make_location_store(environment,  an ``ILocationBackend``
                              request)``                          (``ILocationStore`` +
                                                                  ``start()``/``stop()``)
:class:`CallRecordStoreContract`  ``make_call_record_store(         provides
                              environment, request)``             ``ICallRecordStore``,
                                                                  ``start()``, ``stop()``
:class:`StoreContract`        ``make_store(environment,           an ``IStoreBackend``
                              request)``                          (all three)
============================  ==================================  ===========================

Each ``make_*_store`` defaults to ``make_store``, so a class defining only ``make_store`` runs
every suite it combines. The ``store`` fixture calls the method, fires ``start()`` before the
test and ``stop()`` after it; use ``request.addfinalizer`` for any other clean-up (a scratch
database, keys in a shared server). A location backend plugin, for example::

    from clicktodial.testing.contracts import LocationStoreContract

    class TestMyLocationStore(LocationStoreContract):
        def make_location_store(self, environment, request):
            return my_factory.create({"url": ...}, environment)

``environment`` (a :class:`~clicktodial.store.plugins.StoreEnvironment`) has an inline
reactor that is a fake clock (``callFromThread`` runs at once), inline thread pools, a cheap
password hasher and the realm ``example.com``, so a store on its thread pools has fired every
Deferred by the time a method returns and the tests are synchronous. A store talking to a real
server asynchronously is not: wait for its Deferreds in the store's methods' callers instead
(or run its blocking client on the environment's thread pools, which are inline here).

A store providing ``IVerifiedRegistration`` is checked for it by :class:`StoreContract`
(stores without it skip those tests). A location store providing
``IBindingChangeNotifier`` is also checked for its notices
(``test_change_notices``); notices that arrive from another thread are waited for, at most
``NOTICE_TIMEOUT`` seconds. Stores without the capability skip that test.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from zope.interface.verify import verifyObject

from clicktodial.interfaces import (
    IActiveCallClaims,
    IBindingChangeNotifier,
    ICallRecordStore,
    ICallRecordWrites,
    ICallTraceStore,
    ILocationBackend,
    ILocationStore,
    IOutboundQuota,
    IStoreBackend,
    IUserStore,
    IVerifiedRegistration,
)
from clicktodial.store.errors import (
    InvalidUsername,
    NoSuchCall,
    NoSuchUser,
    OutOfOrderRegistration,
    TooManyBindings,
    UserExists,
)
from clicktodial.store.plugins import StoreEnvironment
from clicktodial.store.traces import TraceAppend, TracedMessage, TraceLimits
from clicktodial.store.values import (
    Binding,
    BindingChanges,
    CallUpdate,
    ContactChange,
    NewUser,
    SipCredentials,
    UserChanges,
    VerifiedUpdate,
)
from clicktodial.testing.fakes import (
    InlineReactor,
    cheap_password_hasher,
    failure_result_of,
    inline_thread_pool,
    success_result_of,
)

REALM = "example.com"
ALICE = "sip:alice@example.com"
BOB = "sip:bob@example.com"
# A Contact URI with parameters and URI headers (RFC 3261 §19.1.1), to be kept verbatim.
ALICE_PHONE = "sip:alice@192.0.2.10:5062;transport=tcp;ob?Route=%3Csip:p.example.com%3E"
ALICE_LAPTOP = "sips:alice@[2001:db8::1]:5061"


def ha1(username: str, password: str, algorithm: str) -> str:
    """HA1 computed independently of the code under test (RFC 2617 §3.2.2.2)."""
    return hashlib.new(algorithm, f"{username}:{REALM}:{password}".encode()).hexdigest()


class _StoreFixtures:
    """
    The fixtures every contract uses; subclasses implement :meth:`make_store` or the
    suite's own ``make_*_store`` (see the module).
    """

    def make_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> IStoreBackend:
        """Build a (not started) store from ``environment``."""
        raise NotImplementedError(
            f"{type(self).__name__} must define make_store or the suite's make_*_store"
        )

    def make_tested_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        """The (not started) store the suite tests: each suite calls its ``make_*_store``."""
        return self.make_store(environment, request)

    @pytest.fixture
    def reactor(self) -> InlineReactor:
        """The store's clock; ``callFromThread`` runs at once."""
        reactor = InlineReactor()
        reactor.advance(1_000_000)
        return reactor

    @pytest.fixture
    def environment(self, reactor: InlineReactor) -> StoreEnvironment:
        return StoreEnvironment(
            reactor=reactor,
            realm=REALM,
            make_thread_pool=inline_thread_pool,
            password_hasher=cheap_password_hasher(),
        )

    @pytest.fixture
    def store(self, environment: StoreEnvironment, request: pytest.FixtureRequest) -> Iterator[Any]:
        store = self.make_tested_store(environment, request)
        success_result_of(store.start())
        yield store
        success_result_of(store.stop())


class UserStoreContract(_StoreFixtures):
    """The behaviour every :class:`IUserStore` has."""

    def make_user_store(self, environment: StoreEnvironment, request: pytest.FixtureRequest) -> Any:
        """Build the (not started) store this suite tests: by default :meth:`make_store`."""
        return self.make_store(environment, request)

    def make_tested_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        return self.make_user_store(environment, request)

    def test_provides_user_store(self, store: Any) -> None:
        """The store provides IUserStore and uses the configured realm."""
        assert verifyObject(IUserStore, store)
        assert store.realm == REALM

    def test_add_and_get_user(self, store: Any, reactor: InlineReactor) -> None:
        """A new user is returned and found with every field as given."""
        user = success_result_of(
            store.add_user(
                "alice",
                password="pw",
                sip_password="sip",
                display_name="Alice Liddell",
                is_admin=True,
            )
        )
        assert user.username == "alice"
        assert user.display_name == "Alice Liddell"
        assert user.is_admin and not user.disabled
        assert user.has_password and user.has_sip_credentials
        assert user.created_at == reactor.seconds()
        assert success_result_of(store.get_user("alice")) == user

    def test_unknown_user_is_none(self, store: Any) -> None:
        """Looking up a user that does not exist gives None."""
        assert success_result_of(store.get_user("nobody")) is None
        assert success_result_of(store.get_sip_credentials("nobody")) is None

    @pytest.mark.parametrize(
        "username",
        [
            "",
            "Alice",
            "al ice",
            "alice@example.com",
            "a" * 65,
            "ali:ce",
            "é",
            "alice\n",
        ],
    )
    def test_invalid_username_rejected(self, store: Any, username: str) -> None:
        """Usernames outside [a-z0-9._-]{1,64} are refused and nothing is stored."""
        failure_result_of(store.add_user(username, sip_password="x"), InvalidUsername)
        assert success_result_of(store.list_users()) == []

    def test_longest_username_accepted(self, store: Any) -> None:
        """A 64-character username of every allowed character class is valid."""
        name = ("a.b_c-9" * 10)[:64]
        assert success_result_of(store.add_user(name)).username == name

    def test_duplicate_user_rejected(self, store: Any) -> None:
        """Adding an existing username fails with UserExists and changes nothing."""
        first = success_result_of(store.add_user("alice", display_name="First"))
        failure = failure_result_of(store.add_user("alice", display_name="Second"), UserExists)
        assert isinstance(failure.value, UserExists)
        assert failure.value.usernames == ("alice",)
        assert success_result_of(store.get_user("alice")) == first

    def test_add_users_counts(self, store: Any) -> None:
        """add_users creates every user and fires with how many."""
        count = success_result_of(
            store.add_users(
                [
                    NewUser("bob", sip_password="b"),
                    NewUser("carol", password="c"),
                    NewUser("dave", display_name="Dave"),
                ]
            )
        )
        assert count == 3
        names = [u.username for u in success_result_of(store.list_users())]
        assert names == ["bob", "carol", "dave"]

    def test_add_users_is_atomic(self, store: Any) -> None:
        """If one user of a batch exists, none of the batch is added."""
        success_result_of(store.add_user("bob"))
        failure = failure_result_of(
            store.add_users(
                [
                    NewUser("alice"),
                    NewUser("bob"),
                    NewUser("carol"),
                ]
            ),
            UserExists,
        )
        assert isinstance(failure.value, UserExists)
        assert failure.value.usernames == ("bob",)
        names = [u.username for u in success_result_of(store.list_users())]
        assert names == ["bob"]

    def test_add_users_rejects_repeated_names(self, store: Any) -> None:
        """A batch naming one user twice is refused whole."""
        failure_result_of(store.add_users([NewUser("x"), NewUser("y"), NewUser("x")]), UserExists)
        assert success_result_of(store.list_users()) == []

    def test_add_users_rejects_invalid_name(self, store: Any) -> None:
        """A batch with one invalid username is refused whole."""
        failure_result_of(store.add_users([NewUser("ok"), NewUser("Not Ok")]), InvalidUsername)
        assert success_result_of(store.list_users()) == []

    def test_list_users_sorted_by_username(self, store: Any) -> None:
        """Users are listed in code-point order of their usernames."""
        names = ["b", "a_b", "ab", "a.b", "a-b", "a9", "0"]
        success_result_of(store.add_users([NewUser(n) for n in names]))
        listed = [u.username for u in success_result_of(store.list_users())]
        assert listed == sorted(names)

    def test_check_password(self, store: Any) -> None:
        """Only the right password of an enabled user logs in."""
        success_result_of(store.add_user("alice", password="correct horse"))
        user = success_result_of(store.check_password("alice", "correct horse"))
        assert user is not None and user.username == "alice"
        assert success_result_of(store.check_password("alice", "Correct horse")) is None
        assert success_result_of(store.check_password("alice", "")) is None
        assert success_result_of(store.check_password("mallory", "correct horse")) is None

    def test_user_without_password_cannot_log_in(self, store: Any) -> None:
        """A user created without a web password has none and cannot log in."""
        user = success_result_of(store.add_user("alice", sip_password="s"))
        assert not user.has_password
        assert success_result_of(store.check_password("alice", "")) is None
        assert success_result_of(store.check_password("alice", "s")) is None

    def test_sip_credentials_are_digest_ha1s(self, store: Any) -> None:
        """SIP credentials are MD5 and SHA-256 HA1s of user:realm:password (RFC 8760)."""
        success_result_of(store.add_user("alice", sip_password="s3cr3t"))
        credentials = success_result_of(store.get_sip_credentials("alice"))
        assert credentials == (ha1("alice", "s3cr3t", "md5"), ha1("alice", "s3cr3t", "sha256"))
        assert credentials.ha1_md5 == ha1("alice", "s3cr3t", "md5")
        assert credentials.ha1_sha256 == ha1("alice", "s3cr3t", "sha256")

    def test_user_without_sip_password_has_no_credentials(self, store: Any) -> None:
        """A user created without a SIP secret cannot register: no credentials."""
        user = success_result_of(store.add_user("alice", password="pw"))
        assert not user.has_sip_credentials
        assert success_result_of(store.get_sip_credentials("alice")) is None

    def test_update_display_name_and_admin(self, store: Any) -> None:
        """update_user changes only the fields it is given."""
        success_result_of(store.add_user("alice", password="pw", display_name="A"))
        user = success_result_of(store.update_user("alice", UserChanges(display_name="Alice")))
        assert (user.display_name, user.is_admin, user.has_password) == ("Alice", False, True)
        user = success_result_of(store.update_user("alice", UserChanges(is_admin=True)))
        assert (user.display_name, user.is_admin) == ("Alice", True)
        assert success_result_of(store.get_user("alice")) == user

    def test_change_password(self, store: Any) -> None:
        """After a password change only the new password logs in."""
        success_result_of(store.add_user("alice", password="old"))
        success_result_of(store.update_user("alice", UserChanges(password="new")))
        assert success_result_of(store.check_password("alice", "old")) is None
        assert success_result_of(store.check_password("alice", "new")) is not None

    def test_set_first_password(self, store: Any) -> None:
        """A user without a web password can log in once one is set."""
        success_result_of(store.add_user("alice"))
        user = success_result_of(store.update_user("alice", UserChanges(password="pw")))
        assert user.has_password
        assert success_result_of(store.check_password("alice", "pw")) is not None

    def test_clear_password(self, store: Any) -> None:
        """Clearing the web password stops web logins."""
        success_result_of(store.add_user("alice", password="pw"))
        user = success_result_of(store.update_user("alice", UserChanges(clear_password=True)))
        assert not user.has_password
        assert success_result_of(store.check_password("alice", "pw")) is None

    def test_change_sip_password(self, store: Any) -> None:
        """A new SIP secret replaces both HA1s."""
        success_result_of(store.add_user("alice", sip_password="old"))
        success_result_of(store.update_user("alice", UserChanges(sip_password="new")))
        credentials = success_result_of(store.get_sip_credentials("alice"))
        assert credentials == (ha1("alice", "new", "md5"), ha1("alice", "new", "sha256"))

    def test_disabled_user_is_locked_out(self, store: Any) -> None:
        """A disabled user cannot log in, register, or use API tokens; enabling restores all."""
        success_result_of(store.add_user("alice", password="pw", sip_password="s"))
        token = success_result_of(store.create_token("alice"))
        user = success_result_of(store.update_user("alice", UserChanges(disabled=True)))
        assert user.disabled
        assert success_result_of(store.check_password("alice", "pw")) is None
        assert success_result_of(store.get_sip_credentials("alice")) is None
        assert success_result_of(store.verify_token(token)) is None
        success_result_of(store.update_user("alice", UserChanges(disabled=False)))
        assert success_result_of(store.check_password("alice", "pw")) is not None
        assert success_result_of(store.get_sip_credentials("alice")) is not None
        assert success_result_of(store.verify_token(token)) == "alice"

    def test_update_unknown_user(self, store: Any) -> None:
        """Updating a user that does not exist fails with NoSuchUser."""
        failure_result_of(store.update_user("nobody", UserChanges(display_name="x")), NoSuchUser)
        failure_result_of(store.update_user("nobody", UserChanges()), NoSuchUser)

    def test_remove_user(self, store: Any) -> None:
        """A removed user is gone, with their tokens; others are untouched."""
        success_result_of(store.add_user("alice", password="pw"))
        success_result_of(store.add_user("bob"))
        token = success_result_of(store.create_token("alice"))
        assert success_result_of(store.remove_user("alice")) is None
        assert success_result_of(store.get_user("alice")) is None
        assert success_result_of(store.verify_token(token)) is None
        assert success_result_of(store.check_password("alice", "pw")) is None
        assert [u.username for u in success_result_of(store.list_users())] == ["bob"]
        failure_result_of(store.remove_user("alice"), NoSuchUser)

    def test_readded_user_does_not_inherit_tokens(self, store: Any) -> None:
        """Tokens of a removed user do not come back with a new user of that name."""
        success_result_of(store.add_user("alice"))
        token = success_result_of(store.create_token("alice"))
        success_result_of(store.remove_user("alice"))
        success_result_of(store.add_user("alice"))
        assert success_result_of(store.verify_token(token)) is None
        assert success_result_of(store.list_tokens("alice")) == []

    def test_tokens(self, store: Any, reactor: InlineReactor) -> None:
        """A token identifies its user; it is listed by a short id derived from its SHA-256."""
        success_result_of(store.add_user("alice"))
        token = success_result_of(store.create_token("alice", "laptop"))
        assert len(token) >= 40
        assert success_result_of(store.verify_token(token)) == "alice"
        assert success_result_of(store.verify_token(token + "x")) is None
        assert success_result_of(store.verify_token("")) is None
        [listed] = success_result_of(store.list_tokens("alice"))
        assert listed.token_id == hashlib.sha256(token.encode()).hexdigest()[:16]
        assert (listed.username, listed.label, listed.created_at) == (
            "alice",
            "laptop",
            reactor.seconds(),
        )
        assert token not in repr(listed)

    def test_tokens_are_unique(self, store: Any) -> None:
        """Each token created is different and all of them work."""
        success_result_of(store.add_user("alice"))
        tokens = {success_result_of(store.create_token("alice")) for _ in range(5)}
        assert len(tokens) == 5
        assert len(success_result_of(store.list_tokens("alice"))) == 5
        for token in tokens:
            assert success_result_of(store.verify_token(token)) == "alice"

    def test_token_for_unknown_user(self, store: Any) -> None:
        """Creating a token for a user that does not exist fails with NoSuchUser."""
        failure_result_of(store.create_token("nobody"), NoSuchUser)

    def test_revoke_token_by_plaintext(self, store: Any) -> None:
        """A token revoked by its plaintext no longer verifies; others still do."""
        success_result_of(store.add_user("alice"))
        first = success_result_of(store.create_token("alice"))
        second = success_result_of(store.create_token("alice"))
        assert success_result_of(store.revoke_token(first)) is True
        assert success_result_of(store.verify_token(first)) is None
        assert success_result_of(store.verify_token(second)) == "alice"
        assert success_result_of(store.revoke_token(first)) is False

    def test_revoke_token_by_id(self, store: Any) -> None:
        """A token can be revoked by the id list_tokens shows."""
        success_result_of(store.add_user("alice"))
        token = success_result_of(store.create_token("alice"))
        [listed] = success_result_of(store.list_tokens("alice"))
        assert success_result_of(store.revoke_token(listed.token_id)) is True
        assert success_result_of(store.verify_token(token)) is None
        assert success_result_of(store.list_tokens("alice")) == []

    def test_revoke_unknown_token(self, store: Any) -> None:
        """Revoking a token that does not exist fires with False."""
        assert success_result_of(store.revoke_token("ctd_nothing")) is False
        assert success_result_of(store.revoke_token("0123456789abcdef")) is False


def register(
    aor: str, call_id: str, cseq: int, *contacts: ContactChange, **kwargs: Any
) -> BindingChanges:
    """The changes of a REGISTER request."""
    return BindingChanges(call_id=call_id, cseq=cseq, contacts=contacts, **kwargs)


class LocationStoreContract(_StoreFixtures):
    """The behaviour every :class:`ILocationStore` has (RFC 3261 §10.3)."""

    def make_location_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        """Build the (not started) store this suite tests: by default :meth:`make_store`."""
        return self.make_store(environment, request)

    def make_tested_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        return self.make_location_store(environment, request)

    NOW = 1_000_000.0

    def update(
        self, store: Any, aor: str, changes: BindingChanges, now: float = NOW
    ) -> list[Binding]:
        return success_result_of(store.update_bindings(aor, changes, now))

    def bindings(self, store: Any, aor: str, now: float = NOW) -> list[Binding]:
        return success_result_of(store.get_bindings(aor, now))

    def test_provides_location_store(self, store: Any) -> None:
        """The store provides ILocationStore, and start/stop (ILocationBackend)."""
        assert verifyObject(ILocationStore, store)
        assert verifyObject(ILocationBackend, store)

    #: seconds :meth:`wait_for` waits for change notices sent from another thread
    NOTICE_TIMEOUT = 5.0

    def wait_for(self, condition: Callable[[], bool]) -> None:
        """
        Until ``condition()`` holds: at once for a store that notifies on the calling thread;
        a store whose notices come from another thread (a pub/sub connection calling
        ``reactor.callFromThread``, inline here) is polled for :attr:`NOTICE_TIMEOUT` s.
        """
        deadline = time.monotonic() + self.NOTICE_TIMEOUT
        while not condition() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert condition(), "no change notice"

    def test_change_notices(self, store: Any) -> None:
        """
        A store providing IBindingChangeNotifier tells each subscriber the AOR of every
        change (here: a REGISTER, a removal), in order; one unsubscribed hears no more.
        """
        notifier = IBindingChangeNotifier(store, None)
        if notifier is None:
            pytest.skip("the store does not provide IBindingChangeNotifier")
        assert verifyObject(IBindingChangeNotifier, notifier)
        first: list[str] = []
        unsubscribe = notifier.subscribe(first.append)
        self.update(store, ALICE, register(ALICE, "c1", 1, ContactChange(ALICE_PHONE, 3600)))
        self.wait_for(lambda: ALICE in first)
        unsubscribe()
        first.clear()
        second: list[str] = []
        notifier.subscribe(second.append)
        success_result_of(store.remove_all(ALICE))
        self.update(store, BOB, register(BOB, "c2", 1, ContactChange("sip:bob@192.0.2.2", 60)))
        self.wait_for(lambda: BOB in second)
        assert ALICE in second and second.index(ALICE) < second.index(BOB)
        assert first == []

    def test_no_bindings(self, store: Any) -> None:
        """An AOR nobody registered has no bindings."""
        assert self.bindings(store, ALICE) == []
        assert success_result_of(store.registered_aors(self.NOW)) == []

    def test_binding_keeps_every_field_verbatim(self, store: Any) -> None:
        """A binding stores the contact URI verbatim (URI headers too) and every attribute."""
        path = ("<sip:edge1.example.com;lr>", "<sip:edge2.example.com;lr;ob>")
        result = self.update(
            store,
            ALICE,
            register(
                ALICE,
                "call-1@host",
                7,
                ContactChange(
                    ALICE_PHONE,
                    3600,
                    q=0.7,
                    instance_id='"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
                    reg_id=1,
                ),
                path=path,
                received="udp:192.0.2.10:5062",
                user_agent="Phone/1.0 (é)",
            ),
        )
        expected = Binding(
            aor=ALICE,
            contact=ALICE_PHONE,
            expires_at=self.NOW + 3600,
            call_id="call-1@host",
            cseq=7,
            q=0.7,
            instance_id='"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"',
            reg_id=1,
            path=path,
            received="udp:192.0.2.10:5062",
            user_agent="Phone/1.0 (é)",
        )
        assert result == [expected]
        assert self.bindings(store, ALICE) == [expected]

    def test_optional_fields_default_to_none(self, store: Any) -> None:
        """A plain contact has no q, instance, reg-id, path, received or user agent."""
        [binding] = self.update(
            store, ALICE, register(ALICE, "c", 1, ContactChange(ALICE_LAPTOP, 60))
        )
        assert (
            binding.q,
            binding.instance_id,
            binding.reg_id,
            binding.path,
            binding.received,
            binding.user_agent,
        ) == (None, None, None, (), None, None)

    def test_binding_expires(self, store: Any) -> None:
        """A binding exists until its expiry time and not at or after it."""
        self.update(store, ALICE, register(ALICE, "c", 1, ContactChange(ALICE_PHONE, 60)))
        assert len(self.bindings(store, ALICE, self.NOW + 59.9)) == 1
        assert self.bindings(store, ALICE, self.NOW + 60) == []
        assert success_result_of(store.registered_aors(self.NOW + 60)) == []
        assert success_result_of(store.all_bindings(self.NOW + 60)) == []

    def test_refresh_with_higher_cseq(self, store: Any) -> None:
        """The same Call-ID with a higher CSeq refreshes the binding (RFC 3261 §10.3 step 7)."""
        self.update(store, ALICE, register(ALICE, "c", 1, ContactChange(ALICE_PHONE, 60)))
        [binding] = self.update(
            store,
            ALICE,
            register(ALICE, "c", 2, ContactChange(ALICE_PHONE, 120)),
            now=self.NOW + 30,
        )
        assert (binding.cseq, binding.expires_at) == (2, self.NOW + 150)
        assert self.bindings(store, ALICE) == [binding]

    @pytest.mark.parametrize("cseq", [4, 5])
    def test_same_call_id_without_higher_cseq_rejected(self, store: Any, cseq: int) -> None:
        """The same Call-ID with a CSeq not above the stored one fails and changes nothing."""
        [before] = self.update(
            store, ALICE, register(ALICE, "c", 5, ContactChange(ALICE_PHONE, 60))
        )
        failure = failure_result_of(
            store.update_bindings(
                ALICE, register(ALICE, "c", cseq, ContactChange(ALICE_PHONE, 3600)), self.NOW
            ),
            OutOfOrderRegistration,
        )
        assert isinstance(failure.value, OutOfOrderRegistration)
        assert (failure.value.stored_cseq, failure.value.cseq) == (5, cseq)
        assert self.bindings(store, ALICE) == [before]

    def test_removal_with_stale_cseq_rejected(self, store: Any) -> None:
        """Removing a binding (expires 0) also obeys the CSeq rule."""
        [before] = self.update(
            store, ALICE, register(ALICE, "c", 5, ContactChange(ALICE_PHONE, 60))
        )
        failure_result_of(
            store.update_bindings(
                ALICE, register(ALICE, "c", 5, ContactChange(ALICE_PHONE, 0)), self.NOW
            ),
            OutOfOrderRegistration,
        )
        assert self.bindings(store, ALICE) == [before]

    def test_other_call_id_replaces_binding(self, store: Any) -> None:
        """A different Call-ID updates the binding whatever its CSeq (the UA restarted)."""
        self.update(store, ALICE, register(ALICE, "old", 50, ContactChange(ALICE_PHONE, 60)))
        [binding] = self.update(
            store, ALICE, register(ALICE, "new", 1, ContactChange(ALICE_PHONE, 60))
        )
        assert (binding.call_id, binding.cseq) == ("new", 1)

    def test_request_is_atomic(self, store: Any) -> None:
        """If one contact of a REGISTER is out of order, none of its changes is applied."""
        self.update(store, ALICE, register(ALICE, "c", 5, ContactChange(ALICE_PHONE, 60)))
        before = self.bindings(store, ALICE)
        failure_result_of(
            store.update_bindings(
                ALICE,
                register(
                    ALICE, "c", 5, ContactChange(ALICE_LAPTOP, 60), ContactChange(ALICE_PHONE, 60)
                ),
                self.NOW,
            ),
            OutOfOrderRegistration,
        )
        assert self.bindings(store, ALICE) == before

    def test_expired_binding_does_not_block(self, store: Any) -> None:
        """An expired binding takes no part in the CSeq comparison: it no longer exists."""
        self.update(store, ALICE, register(ALICE, "c", 5, ContactChange(ALICE_PHONE, 60)))
        [binding] = self.update(
            store, ALICE, register(ALICE, "c", 3, ContactChange(ALICE_PHONE, 60)), now=self.NOW + 61
        )
        assert binding.cseq == 3

    def test_several_contacts(self, store: Any) -> None:
        """One REGISTER may add several contacts; bindings are listed by contact URI."""
        result = self.update(
            store,
            ALICE,
            register(
                ALICE, "c", 1, ContactChange(ALICE_PHONE, 60), ContactChange(ALICE_LAPTOP, 90)
            ),
        )
        assert [b.contact for b in result] == sorted([ALICE_PHONE, ALICE_LAPTOP])
        assert self.bindings(store, ALICE) == result

    def test_bindings_from_several_requests(self, store: Any) -> None:
        """A REGISTER adds to the bindings other UAs made; the result lists them all."""
        self.update(store, ALICE, register(ALICE, "phone", 1, ContactChange(ALICE_PHONE, 60)))
        result = self.update(
            store, ALICE, register(ALICE, "laptop", 1, ContactChange(ALICE_LAPTOP, 60))
        )
        assert {(b.contact, b.call_id) for b in result} == {
            (ALICE_PHONE, "phone"),
            (ALICE_LAPTOP, "laptop"),
        }

    def test_query_changes_nothing(self, store: Any) -> None:
        """A REGISTER without Contact fires with the current bindings and changes nothing."""
        before = self.update(store, ALICE, register(ALICE, "c", 1, ContactChange(ALICE_PHONE, 60)))
        assert self.update(store, ALICE, register(ALICE, "c", 1)) == before
        assert self.bindings(store, ALICE) == before

    def test_expires_zero_removes_one_binding(self, store: Any) -> None:
        """A contact with expires 0 removes only its own binding."""
        self.update(
            store,
            ALICE,
            register(
                ALICE, "c", 1, ContactChange(ALICE_PHONE, 60), ContactChange(ALICE_LAPTOP, 60)
            ),
        )
        result = self.update(store, ALICE, register(ALICE, "c", 2, ContactChange(ALICE_PHONE, 0)))
        assert [b.contact for b in result] == [ALICE_LAPTOP]
        assert self.bindings(store, ALICE) == result

    def test_removing_unknown_contact_is_harmless(self, store: Any) -> None:
        """Removing a contact that has no binding succeeds and changes nothing."""
        assert (
            self.update(store, ALICE, register(ALICE, "c", 1, ContactChange(ALICE_PHONE, 0))) == []
        )
        assert self.bindings(store, ALICE) == []

    def test_wildcard_removes_all(self, store: Any) -> None:
        """Contact: * removes every binding of the AOR, and only of that AOR (§10.3 step 6)."""
        self.update(store, ALICE, register(ALICE, "a", 1, ContactChange(ALICE_PHONE, 60)))
        self.update(store, ALICE, register(ALICE, "b", 1, ContactChange(ALICE_LAPTOP, 60)))
        self.update(store, BOB, register(BOB, "b", 1, ContactChange("sip:bob@h", 60)))
        assert self.update(store, ALICE, register(ALICE, "a", 2, wildcard=True)) == []
        assert self.bindings(store, ALICE) == []
        assert len(self.bindings(store, BOB)) == 1

    def test_wildcard_obeys_cseq_rule(self, store: Any) -> None:
        """A wildcard removal with a stale CSeq for some binding fails and removes nothing."""
        self.update(store, ALICE, register(ALICE, "a", 5, ContactChange(ALICE_PHONE, 60)))
        self.update(store, ALICE, register(ALICE, "b", 1, ContactChange(ALICE_LAPTOP, 60)))
        failure_result_of(
            store.update_bindings(ALICE, register(ALICE, "a", 5, wildcard=True), self.NOW),
            OutOfOrderRegistration,
        )
        assert len(self.bindings(store, ALICE)) == 2

    def test_contacts_matched_by_key(self, store: Any) -> None:
        """Contacts with the same key are one binding; it keeps the latest verbatim URI."""
        self.update(
            store,
            ALICE,
            register(
                ALICE,
                "c",
                1,
                ContactChange("sip:alice@HOST.example.com", 60, key="sip:alice@host.example.com"),
            ),
        )
        [binding] = self.update(
            store,
            ALICE,
            register(
                ALICE,
                "c",
                2,
                ContactChange("sip:alice@host.EXAMPLE.com", 60, key="sip:alice@host.example.com"),
            ),
        )
        assert binding.contact == "sip:alice@host.EXAMPLE.com"
        assert self.bindings(store, ALICE) == [binding]

    def test_outbound_flow_replaced_by_instance_and_reg_id(self, store: Any) -> None:
        """With +sip.instance and reg-id, a new contact replaces the flow's old one (RFC 5626)."""
        instance = '"<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>"'
        self.update(
            store,
            ALICE,
            register(
                ALICE,
                "c",
                1,
                ContactChange("sip:alice@192.0.2.1:5060;ob", 60, instance_id=instance, reg_id=1),
            ),
        )
        self.update(
            store,
            ALICE,
            register(
                ALICE,
                "c",
                2,
                ContactChange("sip:alice@192.0.2.2:5060;ob", 60, instance_id=instance, reg_id=2),
            ),
        )
        result = self.update(
            store,
            ALICE,
            register(
                ALICE,
                "c",
                3,
                ContactChange("sip:alice@192.0.2.3:5060;ob", 60, instance_id=instance, reg_id=1),
            ),
        )
        assert sorted((b.contact, b.reg_id) for b in result) == [
            ("sip:alice@192.0.2.2:5060;ob", 2),
            ("sip:alice@192.0.2.3:5060;ob", 1),
        ]
        assert self.bindings(store, ALICE) == result

    def test_aors_are_independent(self, store: Any) -> None:
        """Bindings of one AOR never show up under another."""
        self.update(store, ALICE, register(ALICE, "c", 1, ContactChange(ALICE_PHONE, 60)))
        self.update(store, BOB, register(BOB, "c", 1, ContactChange(ALICE_PHONE, 60)))
        assert [b.aor for b in self.bindings(store, ALICE)] == [ALICE]
        assert [b.aor for b in self.bindings(store, BOB)] == [BOB]

    def test_remove_all(self, store: Any) -> None:
        """remove_all deletes every binding of one AOR and says how many."""
        self.update(
            store,
            ALICE,
            register(
                ALICE, "c", 1, ContactChange(ALICE_PHONE, 60), ContactChange(ALICE_LAPTOP, 60)
            ),
        )
        self.update(store, BOB, register(BOB, "c", 1, ContactChange("sip:bob@h", 60)))
        assert success_result_of(store.remove_all(ALICE)) == 2
        assert self.bindings(store, ALICE) == []
        assert len(self.bindings(store, BOB)) == 1
        assert success_result_of(store.remove_all(ALICE)) == 0

    def test_purge_expired(self, store: Any) -> None:
        """purge_expired deletes expired bindings only and says how many."""
        self.update(
            store,
            ALICE,
            register(
                ALICE, "c", 1, ContactChange(ALICE_PHONE, 60), ContactChange(ALICE_LAPTOP, 600)
            ),
        )
        self.update(store, BOB, register(BOB, "c", 1, ContactChange("sip:bob@h", 30)))
        assert success_result_of(store.purge_expired(self.NOW + 60)) == 2
        assert [b.contact for b in self.bindings(store, ALICE, self.NOW)] == [ALICE_LAPTOP]
        assert success_result_of(store.purge_expired(self.NOW + 60)) == 0

    def test_registered_aors_and_all_bindings(self, store: Any) -> None:
        """The AORs with live bindings are listed sorted; all_bindings orders by AOR, contact."""
        carol = "sip:carol@example.com"
        self.update(store, BOB, register(BOB, "c", 1, ContactChange("sip:bob@h", 60)))
        self.update(
            store,
            ALICE,
            register(
                ALICE, "c", 1, ContactChange(ALICE_PHONE, 60), ContactChange(ALICE_LAPTOP, 60)
            ),
        )
        self.update(store, carol, register(carol, "c", 1, ContactChange("sip:c@h", 10)))
        now = self.NOW + 20
        assert success_result_of(store.registered_aors(now)) == [ALICE, BOB]
        everything = success_result_of(store.all_bindings(now))
        assert [(b.aor, b.contact) for b in everything] == sorted(
            [(ALICE, ALICE_PHONE), (ALICE, ALICE_LAPTOP), (BOB, "sip:bob@h")]
        )

    # -- [registrar] max_contacts: BindingChanges.max_bindings ---------------------------

    def test_request_adding_beyond_max_bindings_fails_and_changes_nothing(self, store: Any) -> None:
        """A REGISTER that would leave more than max_bindings fails whole: none of its
        contacts is bound, nothing of it is refreshed or removed."""
        self.update(
            store, ALICE, register(ALICE, "desk", 1, ContactChange(ALICE_PHONE, 60), max_bindings=2)
        )
        before = self.bindings(store, ALICE)
        failure = failure_result_of(
            store.update_bindings(
                ALICE,
                register(
                    ALICE,
                    "desk",
                    2,
                    ContactChange(ALICE_PHONE, 0),
                    *(ContactChange(f"sip:alice@192.0.2.{n}", 60) for n in range(1, 4)),
                    max_bindings=2,
                ),
                self.NOW,
            ),
            TooManyBindings,
        )
        assert isinstance(failure.value, TooManyBindings)
        assert (failure.value.aor, failure.value.count, failure.value.limit) == (ALICE, 3, 2)
        assert self.bindings(store, ALICE) == before

    def test_max_bindings_counts_the_bindings_of_every_call_id(self, store: Any) -> None:
        """The limit is per AOR: REGISTERs from several Call-IDs (UAs) share it; the one that
        would go beyond it fails, the others are applied in full."""
        outcomes = [
            store.update_bindings(
                ALICE,
                register(
                    ALICE, f"ua-{n}", 1, ContactChange(f"sip:alice@192.0.2.{n}", 60), max_bindings=3
                ),
                self.NOW,
            )
            for n in range(1, 6)
        ]
        results: list[object] = []
        for d in outcomes:
            d.addBoth(results.append)
        assert [type(r).__name__ for r in results] == ["list"] * 3 + ["Failure"] * 2
        for failure in results[3:]:
            failure.trap(TooManyBindings)  # type: ignore[attr-defined]
        assert [b.call_id for b in self.bindings(store, ALICE)] == ["ua-1", "ua-2", "ua-3"]
        assert [len(r) for r in results[:3]] == [1, 2, 3]  # type: ignore[arg-type]

    def test_refresh_removal_and_replacement_pass_at_the_limit(self, store: Any) -> None:
        """At the limit, a REGISTER may still refresh or remove its bindings, remove one and
        add another, or replace an RFC 5626 flow (same instance and reg-id); expired
        bindings do not count."""

        def change(n: int, expires: int = 60) -> ContactChange:
            return ContactChange(f"sip:alice@192.0.2.{n}", expires)

        self.update(store, ALICE, register(ALICE, "c", 1, change(1), change(2, 10), max_bindings=2))
        self.update(store, ALICE, register(ALICE, "c", 2, change(1, 90), max_bindings=2))
        self.update(store, ALICE, register(ALICE, "c", 3, change(2, 0), change(3), max_bindings=2))
        assert [b.contact for b in self.bindings(store, ALICE)] == [
            "sip:alice@192.0.2.1",
            "sip:alice@192.0.2.3",
        ]
        # At the limit: a new flow is refused; once a binding expired, it is accepted.
        failure_result_of(
            store.update_bindings(
                ALICE, register(ALICE, "other", 1, change(4), max_bindings=2), self.NOW
            ),
            TooManyBindings,
        )
        self.update(
            store, ALICE, register(ALICE, "other", 2, change(4), max_bindings=2), now=self.NOW + 61
        )
        instance = '"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"'
        flow = ContactChange("sip:alice@192.0.2.5", 60, instance_id=instance, reg_id=1)
        moved = ContactChange("sip:alice@192.0.2.6", 60, instance_id=instance, reg_id=1)
        self.update(store, BOB, register(BOB, "f", 1, flow, change(7), max_bindings=2))
        rebound = self.update(store, BOB, register(BOB, "f", 2, moved, max_bindings=2))
        assert [b.contact for b in rebound] == ["sip:alice@192.0.2.6", "sip:alice@192.0.2.7"]

    def test_bindings_above_a_lowered_limit_can_be_refreshed(self, store: Any) -> None:
        """Bindings stored under a higher limit stay and can be refreshed; no new one is
        added until the AOR is back under the limit."""
        contacts = [ContactChange(f"sip:alice@192.0.2.{n}", 60) for n in range(1, 5)]
        self.update(store, ALICE, register(ALICE, "c", 1, *contacts, max_bindings=4))
        assert (
            len(self.update(store, ALICE, register(ALICE, "c", 2, *contacts, max_bindings=2))) == 4
        )
        failure_result_of(
            store.update_bindings(
                ALICE,
                register(ALICE, "c", 3, ContactChange(ALICE_LAPTOP, 60), max_bindings=2),
                self.NOW,
            ),
            TooManyBindings,
        )


def _is_uuid4_hex(text: str) -> bool:
    return re.fullmatch(r"[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}", text) is not None


class CallRecordStoreContract(_StoreFixtures):
    """The behaviour every :class:`ICallRecordStore` has."""

    def make_call_record_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        """Build the (not started) store this suite tests: by default :meth:`make_store`."""
        return self.make_store(environment, request)

    def make_tested_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        return self.make_call_record_store(environment, request)

    def test_provides_call_record_store(self, store: Any) -> None:
        """The store provides ICallRecordStore."""
        assert verifyObject(ICallRecordStore, store)

    def test_create_call(self, store: Any) -> None:
        """A new call has a UUID4 hex id, state 'new', and is active."""
        call_id = success_result_of(store.create_call("alice", "bob", 100.5, node="node-1"))
        assert _is_uuid4_hex(call_id)
        record = success_result_of(store.get_call(call_id))
        assert (
            record.call_id,
            record.caller,
            record.callee,
            record.created_at,
            record.node,
            record.state,
        ) == (call_id, "alice", "bob", 100.5, "node-1", "new")
        assert record.active
        assert (
            record.caller_answered_at,
            record.callee_rung_at,
            record.callee_answered_at,
            record.connected_at,
            record.ended_at,
            record.end_reason,
            record.sip_status,
            record.who_hung_up,
        ) == (None,) * 8

    def test_call_ids_are_unique(self, store: Any) -> None:
        """Every call gets its own id."""
        ids = {success_result_of(store.create_call("a", "b", 1.0)) for _ in range(10)}
        assert len(ids) == 10

    def test_update_call(self, store: Any) -> None:
        """update_call sets the given fields, keeps the others, and fires with the record."""
        call_id = success_result_of(store.create_call("alice", "bob", 100.0))
        record = success_result_of(
            store.update_call(
                call_id, CallUpdate(state="calling-callee", caller_answered_at=101.25)
            )
        )
        assert (record.state, record.caller_answered_at, record.caller) == (
            "calling-callee",
            101.25,
            "alice",
        )
        record = success_result_of(
            store.update_call(
                call_id,
                CallUpdate(
                    state="ended",
                    callee_rung_at=102.0,
                    ended_at=110.0,
                    end_reason="callee-busy",
                    sip_status=486,
                    who_hung_up="callee",
                ),
            )
        )
        assert record == success_result_of(store.get_call(call_id))
        assert (
            record.caller_answered_at,
            record.callee_rung_at,
            record.ended_at,
            record.end_reason,
            record.sip_status,
            record.who_hung_up,
        ) == (101.25, 102.0, 110.0, "callee-busy", 486, "callee")
        assert not record.active

    def test_connected_at_is_kept_apart_from_the_callee_answer(self, store: Any) -> None:
        """A call both phones answered but that never connected keeps connected_at unset."""
        failed = success_result_of(store.create_call("alice", "bob", 100.0))
        record = success_result_of(
            store.update_call(
                failed,
                CallUpdate(
                    state="failed",
                    callee_answered_at=103.0,
                    ended_at=103.5,
                    end_reason="error",
                    sip_status=488,
                    who_hung_up="system",
                ),
            )
        )
        assert (record.connected_at, record.public_state) == (None, "failed")
        ended = success_result_of(store.create_call("alice", "bob", 100.0))
        success_result_of(
            store.update_call(
                ended, CallUpdate(state="connected", callee_answered_at=103.0, connected_at=103.25)
            )
        )
        record = success_result_of(
            store.update_call(
                ended,
                CallUpdate(
                    state="ended", ended_at=150.0, end_reason="caller-hangup", who_hung_up="caller"
                ),
            )
        )
        assert record == success_result_of(store.get_call(ended))
        assert (record.connected_at, record.public_state) == (103.25, "ended")

    def test_empty_update_returns_record(self, store: Any) -> None:
        """An update with no fields fires with the unchanged record."""
        call_id = success_result_of(store.create_call("alice", "bob", 1.0))
        assert success_result_of(store.update_call(call_id, CallUpdate())) == (
            success_result_of(store.get_call(call_id))
        )

    def test_unknown_call(self, store: Any) -> None:
        """An unknown call id is None for get_call and NoSuchCall for update_call."""
        assert success_result_of(store.get_call("0" * 32)) is None
        failure_result_of(store.update_call("0" * 32, CallUpdate(state="x")), NoSuchCall)
        failure_result_of(store.update_call("0" * 32, CallUpdate()), NoSuchCall)

    def test_write_call_sets_the_fields_and_fires_with_none(self, store: Any) -> None:
        """ICallRecordWrites (optional): write_call sets what update_call would, fires with
        None, also when the values were already those; NoSuchCall for an unknown call."""
        writes = ICallRecordWrites(store, None)
        if writes is None:
            pytest.skip("the store does not provide the optional ICallRecordWrites")
        verifyObject(ICallRecordWrites, writes)
        call_id = success_result_of(store.create_call("alice", "bob", 1.0))
        connected = CallUpdate(state="connected", caller_answered_at=2.0, connected_at=3.0)
        assert success_result_of(writes.write_call(call_id, connected)) is None
        assert success_result_of(writes.write_call(call_id, connected)) is None
        ended = CallUpdate(
            state="ended", ended_at=9.5, end_reason="caller-hangup", who_hung_up="caller"
        )
        assert success_result_of(writes.write_call(call_id, ended)) is None
        record = success_result_of(store.get_call(call_id))
        assert (record.state, record.caller_answered_at, record.connected_at) == (
            "ended",
            2.0,
            3.0,
        )
        assert (record.ended_at, record.end_reason, record.who_hung_up) == (
            9.5,
            "caller-hangup",
            "caller",
        )
        failure_result_of(writes.write_call("0" * 32, ended), NoSuchCall)
        failure_result_of(writes.write_call("0" * 32, CallUpdate()), NoSuchCall)

    def test_list_calls_newest_first_per_user(self, store: Any) -> None:
        """A user's history has the calls they made or received, newest first."""
        first = success_result_of(store.create_call("alice", "bob", 10.0))
        second = success_result_of(store.create_call("bob", "alice", 20.0))
        success_result_of(store.create_call("carol", "dave", 30.0))
        third = success_result_of(store.create_call("alice", "carol", 40.0))
        listed = success_result_of(store.list_calls("alice"))
        assert [c.call_id for c in listed] == [third, second, first]
        assert [c.call_id for c in success_result_of(store.list_calls("bob"))] == [second, first]
        assert len(success_result_of(store.list_calls())) == 4
        assert success_result_of(store.list_calls("nobody")) == []

    def test_list_calls_paging(self, store: Any) -> None:
        """limit, offset and before page through the history without gaps or repeats."""
        ids = [success_result_of(store.create_call("alice", "bob", float(t))) for t in range(10)]
        newest_first = ids[::-1]
        page1 = success_result_of(store.list_calls("alice", limit=4))
        page2 = success_result_of(store.list_calls("alice", limit=4, offset=4))
        page3 = success_result_of(store.list_calls("alice", limit=4, offset=8))
        assert [c.call_id for c in page1 + page2 + page3] == newest_first
        by_time = success_result_of(store.list_calls("alice", limit=3, before=5.0))
        assert [c.call_id for c in by_time] == [ids[4], ids[3], ids[2]]

    def test_list_calls_ties_broken_by_id(self, store: Any) -> None:
        """Calls created at the same time are ordered by descending id."""
        ids = [success_result_of(store.create_call("alice", "bob", 5.0)) for _ in range(5)]
        listed = success_result_of(store.list_calls("alice"))
        assert [c.call_id for c in listed] == sorted(ids, reverse=True)

    @pytest.mark.parametrize(("limit", "offset"), [(0, 0), (-1, 0), (1001, 0), (10, -1)])
    def test_list_calls_bad_page(self, store: Any, limit: int, offset: int) -> None:
        """A limit outside 1..1000 or a negative offset is a ValueError."""
        failure_result_of(store.list_calls("alice", limit=limit, offset=offset), ValueError)

    def test_count_active(self, store: Any) -> None:
        """Calls are active until they have ended_at; they can be counted per node."""
        a = success_result_of(store.create_call("alice", "bob", 1.0, node="n1"))
        success_result_of(store.create_call("carol", "bob", 2.0, node="n2"))
        success_result_of(store.create_call("dave", "bob", 3.0, node="n1"))
        assert success_result_of(store.count_active()) == 3
        assert success_result_of(store.count_active("n1")) == 2
        success_result_of(
            store.update_call(a, CallUpdate(ended_at=5.0, end_reason="caller-hangup"))
        )
        assert success_result_of(store.count_active()) == 2
        assert success_result_of(store.count_active("n1")) == 1
        assert success_result_of(store.count_active("n3")) == 0

    def test_end_active_calls(self, store: Any) -> None:
        """end_active_calls ends a node's active calls as 'lost' by the system, nothing else."""
        ended = success_result_of(store.create_call("alice", "bob", 1.0, node="n1"))
        success_result_of(
            store.update_call(ended, CallUpdate(ended_at=2.0, end_reason="callee-hangup"))
        )
        lost = success_result_of(store.create_call("alice", "bob", 3.0, node="n1"))
        other = success_result_of(store.create_call("alice", "bob", 3.0, node="n2"))
        assert success_result_of(store.end_active_calls("n1", 50.0)) == 1
        record = success_result_of(store.get_call(lost))
        assert (record.ended_at, record.end_reason, record.who_hung_up) == (50.0, "lost", "system")
        assert success_result_of(store.get_call(ended)).end_reason == "callee-hangup"
        assert success_result_of(store.get_call(other)).active
        assert success_result_of(store.end_active_calls(None, 60.0, "error")) == 1
        assert success_result_of(store.count_active()) == 0

    def test_claim_active_calls(self, store: Any) -> None:
        """
        A store with the optional IActiveCallClaims ends a node's active calls
        like end_active_calls and returns their ids; a call is claimed once.
        """
        claims = IActiveCallClaims(store, None)
        if claims is None:
            pytest.skip("the store does not provide the optional IActiveCallClaims")
        assert verifyObject(IActiveCallClaims, claims)
        ended = success_result_of(store.create_call("alice", "bob", 1.0, node="n1"))
        success_result_of(
            store.update_call(ended, CallUpdate(ended_at=2.0, end_reason="callee-hangup"))
        )
        lost = {
            success_result_of(store.create_call("alice", "bob", 3.0, node="n1")) for _ in range(3)
        }
        other = success_result_of(store.create_call("alice", "bob", 3.0, node="n2"))
        claimed: list[str] = success_result_of(claims.claim_active_calls("n1", 50.0))
        assert sorted(claimed) == sorted(lost)
        for call_id in lost:
            record = success_result_of(store.get_call(call_id))
            assert (record.ended_at, record.end_reason, record.who_hung_up) == (
                50.0,
                "lost",
                "system",
            )
        assert success_result_of(store.get_call(ended)).end_reason == "callee-hangup"
        assert success_result_of(store.get_call(other)).active
        # Claimed once: a second claim (another daemon) gets none of them.
        assert success_result_of(claims.claim_active_calls("n1", 55.0)) == []
        assert success_result_of(store.get_call(next(iter(lost)))).ended_at == 50.0
        assert success_result_of(claims.claim_active_calls(None, 60.0, "error")) == [other]
        assert success_result_of(store.get_call(other)).end_reason == "error"
        assert success_result_of(store.count_active()) == 0


class StoreContract(UserStoreContract, LocationStoreContract, CallRecordStoreContract):
    """All three contracts, plus the backend lifecycle; and for a store that provides
    :class:`IVerifiedRegistration`, that capability (skipped for one that does not)."""

    def make_tested_store(
        self, environment: StoreEnvironment, request: pytest.FixtureRequest
    ) -> Any:
        return self.make_store(environment, request)

    def test_provides_store_backend(self, store: Any) -> None:
        """The store provides IStoreBackend (all three stores, start and stop)."""
        assert verifyObject(IStoreBackend, store)

    # -- IVerifiedRegistration (optional) -------------------------------------------------

    @staticmethod
    def verified(store: Any) -> Any:
        """The store as an :class:`IVerifiedRegistration`; the test skips without it."""
        verified = IVerifiedRegistration(store, None)
        if verified is None:
            pytest.skip("the store does not provide IVerifiedRegistration")
        assert verifyObject(IVerifiedRegistration, verified)
        return verified

    def test_verified_update_writes_what_update_bindings_would(self, store: Any) -> None:
        """verify gets the user's credentials (as get_sip_credentials gives them); when it
        accepts, the bindings are updated as update_bindings does, and both come back."""
        verified = self.verified(store)
        success_result_of(store.add_user("alice", sip_password="secret"))
        seen: list[object] = []

        def accept(credentials: SipCredentials | None) -> bool:
            seen.append(credentials)
            return True

        changes = register(ALICE, "c1", 1, ContactChange(ALICE_PHONE, 60), received="sip:h")
        result = success_result_of(
            verified.update_bindings_if_verified("alice", accept, ALICE, changes, self.NOW)
        )
        credentials = success_result_of(store.get_sip_credentials("alice"))
        assert credentials is not None and seen[-1] == credentials
        assert result == VerifiedUpdate(
            credentials, success_result_of(store.get_bindings(ALICE, self.NOW))
        )
        [binding] = result.bindings
        assert (binding.contact, binding.expires_at, binding.received) == (
            ALICE_PHONE,
            self.NOW + 60,
            "sip:h",
        )

    def test_verified_update_refused_writes_nothing(self, store: Any) -> None:
        """When verify refuses, nothing is written and the bindings come back None."""
        verified = self.verified(store)
        success_result_of(store.add_user("alice", sip_password="secret"))
        self.update(store, ALICE, register(ALICE, "c1", 1, ContactChange(ALICE_PHONE, 60)))
        before = success_result_of(store.get_bindings(ALICE, self.NOW))
        changes = register(ALICE, "c1", 2, ContactChange(ALICE_PHONE, 0))
        result = success_result_of(
            verified.update_bindings_if_verified("alice", lambda c: False, ALICE, changes, self.NOW)
        )
        assert result == VerifiedUpdate(success_result_of(store.get_sip_credentials("alice")), None)
        assert success_result_of(store.get_bindings(ALICE, self.NOW)) == before

    def test_verified_update_gives_none_for_unknown_and_disabled_users(self, store: Any) -> None:
        """verify gets None for an unknown user and a disabled one (it may still accept:
        the store writes what verify allows)."""
        verified = self.verified(store)
        success_result_of(store.add_user("bob", sip_password="secret"))
        success_result_of(store.update_user("bob", UserChanges(disabled=True)))
        seen: list[object] = []

        def refuse(credentials: SipCredentials | None) -> bool:
            seen.append(credentials)
            return False

        for username in ("nobody", "bob"):
            result = success_result_of(
                verified.update_bindings_if_verified(
                    username,
                    refuse,
                    BOB,
                    register(BOB, "c", 1, ContactChange("sip:bob@h", 60)),
                    self.NOW,
                )
            )
            assert result == VerifiedUpdate(None, None)
        assert seen == [None, None]
        assert success_result_of(store.get_bindings(BOB, self.NOW)) == []

    def test_verified_update_refuses_as_update_bindings_does(self, store: Any) -> None:
        """Accepted credentials, but an update update_bindings refuses (out-of-order CSeq,
        beyond max_bindings): the same failure, nothing written."""
        verified = self.verified(store)
        success_result_of(store.add_user("alice", sip_password="secret"))
        self.update(
            store, ALICE, register(ALICE, "c1", 5, ContactChange(ALICE_PHONE, 60), max_bindings=1)
        )
        before = success_result_of(store.get_bindings(ALICE, self.NOW))
        stale = register(ALICE, "c1", 4, ContactChange(ALICE_PHONE, 0))
        failure_result_of(
            verified.update_bindings_if_verified("alice", lambda c: True, ALICE, stale, self.NOW),
            OutOfOrderRegistration,
        )
        beyond = register(ALICE, "c2", 1, ContactChange(ALICE_LAPTOP, 60), max_bindings=1)
        failure_result_of(
            verified.update_bindings_if_verified("alice", lambda c: True, ALICE, beyond, self.NOW),
            TooManyBindings,
        )
        assert success_result_of(store.get_bindings(ALICE, self.NOW)) == before


def traced(
    n: int,
    data: bytes | None = None,
    *,
    at_ms: int | None = None,
    direction: str = "out",
    leg: str = "caller",
) -> TracedMessage:
    """A traced message for tests: the ``n``-th of a call (its data says which)."""
    return TracedMessage(
        at_ms=1_000_000_000 + n if at_ms is None else at_ms,
        direction=direction,
        transport="UDP",
        local_host="127.0.0.1",
        local_port=5060,
        remote_host="::1" if n % 2 else "127.0.0.2",
        remote_port=5062 + n,
        leg=leg,
        sip_call_id=f"leg-{leg}@127.0.0.1",
        retransmission=n % 3 == 2,
        data=data if data is not None else f"OPTIONS sip:{n}@x SIP/2.0\r\n\r\n".encode(),
    )


class CallTraceStoreContract(_StoreFixtures):
    """The behaviour every :class:`ICallTraceStore` has (a backend that keeps traces)."""

    CALL = "0" * 31 + "1"
    OTHER = "0" * 31 + "2"

    def test_provides_call_trace_store(self, store: Any) -> None:
        """The store provides ICallTraceStore."""
        assert verifyObject(ICallTraceStore, store)

    def test_unknown_call_has_no_trace(self, store: Any) -> None:
        """get_trace of a call nothing was appended for fires with None."""
        assert success_result_of(store.get_trace(self.CALL)) is None

    def test_appends_keep_order_and_every_field(self, store: Any) -> None:
        """Messages come back whole, in the order of the appends, per call, octets intact."""
        first = (traced(0), traced(1, direction="in"), traced(2, b"\x00\xff binary"))
        success_result_of(
            store.append_traces(
                [TraceAppend(self.CALL, first), TraceAppend(self.OTHER, (traced(9),))],
                TraceLimits(),
            )
        )
        success_result_of(
            store.append_traces([TraceAppend(self.CALL, (traced(3, leg="callee"),))], TraceLimits())
        )
        trace = success_result_of(store.get_trace(self.CALL))
        assert trace.call_id == self.CALL
        assert trace.messages == (*first, traced(3, leg="callee"))
        assert trace.dropped == 0
        assert success_result_of(store.get_trace(self.OTHER)).messages == (traced(9),)

    def test_message_bound(self, store: Any) -> None:
        """Past max_messages, later messages are counted as dropped, across appends."""
        limits = TraceLimits(max_messages=3, max_bytes=1_000_000)
        success_result_of(
            store.append_traces([TraceAppend(self.CALL, (traced(0), traced(1)))], limits)
        )
        success_result_of(
            store.append_traces([TraceAppend(self.CALL, (traced(2), traced(3), traced(4)))], limits)
        )
        trace = success_result_of(store.get_trace(self.CALL))
        assert [m.data for m in trace.messages] == [traced(i).data for i in range(3)]
        assert trace.dropped == 2

    def test_byte_bound_drops_everything_after_the_first_misfit(self, store: Any) -> None:
        """A message over max_bytes is dropped, and so is every later one (a prefix stays)."""
        limits = TraceLimits(max_messages=100, max_bytes=100)
        success_result_of(
            store.append_traces(
                [
                    TraceAppend(
                        self.CALL, (traced(0, b"a" * 60), traced(1, b"b" * 60), traced(2, b"c"))
                    )
                ],
                limits,
            )
        )
        success_result_of(
            store.append_traces([TraceAppend(self.CALL, (traced(3, b"d"),), dropped=4)], limits)
        )
        trace = success_result_of(store.get_trace(self.CALL))
        assert [m.data for m in trace.messages] == [b"a" * 60]
        assert trace.dropped == 2 + 1 + 4

    def test_dropped_counted_by_the_recorder(self, store: Any) -> None:
        """An append's own dropped count is added to the trace's."""
        success_result_of(
            store.append_traces([TraceAppend(self.CALL, (traced(0),), dropped=5)], TraceLimits())
        )
        assert success_result_of(store.get_trace(self.CALL)).dropped == 5

    def test_purge_older_than(self, store: Any) -> None:
        """purge_traces removes the traces whose newest message is older than the time."""
        success_result_of(
            store.append_traces(
                [
                    TraceAppend(
                        self.CALL, (traced(0, at_ms=1_000_000), traced(1, at_ms=2_000_000))
                    ),
                    TraceAppend(self.OTHER, (traced(0, at_ms=1_500_000),)),
                ],
                TraceLimits(),
            )
        )
        assert success_result_of(store.purge_traces(1_600.0)) == 1
        assert success_result_of(store.get_trace(self.OTHER)) is None
        assert len(success_result_of(store.get_trace(self.CALL)).messages) == 2
        assert success_result_of(store.purge_traces(2_000.001)) == 1
        assert success_result_of(store.get_trace(self.CALL)) is None
        assert success_result_of(store.purge_traces(3_000.0)) == 0


class OutboundQuotaContract(_StoreFixtures):
    """The behaviour every :class:`IOutboundQuota` has (daily outbound call counts)."""

    def test_provides_outbound_quota(self, store: Any) -> None:
        """The store provides IOutboundQuota."""
        assert verifyObject(IOutboundQuota, store)

    def test_counts_up_to_the_limit_then_refuses(self, store: Any) -> None:
        """count_outbound_call counts until the limit, then fires False and counts no more."""
        results = [
            success_result_of(store.count_outbound_call("alice", "2026-12-06", 3)) for _ in range(5)
        ]
        assert results == [True, True, True, False, False]
        assert success_result_of(store.outbound_calls("alice", "2026-12-06")) == 3

    def test_counts_per_user_and_day(self, store: Any) -> None:
        """Each user has their own count each day; a new day starts from zero."""
        assert success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        assert not success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        assert success_result_of(store.count_outbound_call("bob", "2026-12-06", 1))
        assert success_result_of(store.count_outbound_call("alice", "2026-12-07", 1))
        assert success_result_of(store.outbound_calls("carol", "2026-12-06")) == 0

    def test_a_higher_limit_counts_on(self, store: Any) -> None:
        """The limit is the caller's (config may change): a raised limit counts further."""
        assert success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        assert not success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        assert success_result_of(store.count_outbound_call("alice", "2026-12-06", 2))
        assert success_result_of(store.outbound_calls("alice", "2026-12-06")) == 2

    def test_an_uncounted_call_frees_its_place_never_below_zero(self, store: Any) -> None:
        """uncount_outbound_call gives one place back; with nothing counted it does nothing."""
        assert success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        assert not success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        assert success_result_of(store.uncount_outbound_call("alice", "2026-12-06")) is None
        assert success_result_of(store.outbound_calls("alice", "2026-12-06")) == 0
        assert success_result_of(store.count_outbound_call("alice", "2026-12-06", 1))
        success_result_of(store.uncount_outbound_call("bob", "2026-12-06"))
        success_result_of(store.uncount_outbound_call("alice", "2026-12-07"))
        assert success_result_of(store.outbound_calls("bob", "2026-12-06")) == 0
        assert success_result_of(store.outbound_calls("alice", "2026-12-07")) == 0
        assert success_result_of(store.outbound_calls("alice", "2026-12-06")) == 1

    def test_number_columns_are_kept(self, store: Any) -> None:
        """A call to a number keeps its number, class, trunk and refusal."""
        call_id = success_result_of(store.create_call("alice", "+442079460958", 100.0))
        record = success_result_of(
            store.update_call(
                call_id,
                CallUpdate(
                    state="refused",
                    ended_at=100.0,
                    end_reason="refused",
                    who_hung_up="system",
                    number="+442079460958",
                    destination_class="international",
                    trunk="uk_main",
                    refusal="international numbers are not allowed for alice",
                ),
            )
        )
        assert record == success_result_of(store.get_call(call_id))
        assert (record.number, record.destination_class, record.trunk, record.refusal) == (
            "+442079460958",
            "international",
            "uk_main",
            "international numbers are not allowed for alice",
        )
        assert record.public_state == "failed"


def count_at_once(
    stores: Sequence[Any], attempts: int, limit: int, username: str = "bob", day: str = "2026-12-06"
) -> list[bool]:
    """
    ``attempts`` calls of ``count_outbound_call`` from each of ``stores``, each store in
    its own thread at the same time (as that many daemons): what each call fired with.
    The stores must run their operations inline (``InlineThreadPool``).
    """
    counted: list[bool] = []
    lock = threading.Lock()

    def clicks(store: Any) -> None:
        for _ in range(attempts):
            result = success_result_of(store.count_outbound_call(username, day, limit))
            with lock:
                counted.append(result)

    threads = [threading.Thread(target=clicks, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return counted
