"""Values crossing the store interfaces, the REGISTER rules' inputs, and the secret helpers."""

from __future__ import annotations

import hashlib

import attrs
import pytest
from argon2 import PasswordHasher

from clicktodial.store.passwords import (
    PasswordHashing,
    generate_sip_secret,
    generate_token,
    sip_credentials,
    sip_ha1,
    token_digest,
    token_id_of_digest,
)
from clicktodial.store.values import (
    BindingChanges,
    CallChanges,
    CallUpdate,
    ContactChange,
    NewUser,
    UserChanges,
    aor_user_part,
    is_valid_username,
    user_aor,
)
from clicktodial.testing.fakes import (
    InlineReactor,
    InlineThreadPool,
    cheap_password_hasher,
    failure_result_of,
    success_result_of,
)

# RFC 7616 §3.9.1: the example with MD5 and with SHA-256.
RFC7616 = {
    "username": "Mufasa",
    "realm": "http-auth@example.org",
    "password": "Circle of Life",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
    "nc": "00000001",
    "qop": "auth",
    "method": "GET",
    "uri": "/dir/index.html",
}


@pytest.mark.parametrize(
    ("algorithm", "hashlib_name", "response"),
    [
        ("MD5", "md5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "sha256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_ha1_gives_rfc7616_responses(algorithm: str, hashlib_name: str, response: str) -> None:
    """Our HA1, used in the RFC 7616 §3.9.1 computation, gives the RFC's responses."""
    v = RFC7616
    ha1 = sip_ha1(v["username"], v["realm"], v["password"], algorithm)

    def h(text: str) -> str:
        return hashlib.new(hashlib_name, text.encode()).hexdigest()

    ha2 = h(f"{v['method']}:{v['uri']}")
    assert h(f"{ha1}:{v['nonce']}:{v['nc']}:{v['cnonce']}:{v['qop']}:{ha2}") == response


def test_ha1_rfc2617_vector() -> None:
    """HA1 of the RFC 2617 §3.5 example is the published value."""
    assert sip_ha1("Mufasa", "testrealm@host.com", "Circle Of Life") == (
        "939e7578ed9e3c518a452acee763bce9"
    )


def test_sip_credentials_holds_both_ha1s() -> None:
    """sip_credentials is (MD5 HA1, SHA-256 HA1)."""
    assert sip_credentials("a", "r", "p") == (
        sip_ha1("a", "r", "p", "MD5"),
        sip_ha1("a", "r", "p", "SHA-256"),
    )


def test_unknown_digest_algorithm() -> None:
    """Only MD5 and SHA-256 HA1s exist."""
    with pytest.raises(ValueError, match="SHA-512-256"):
        sip_ha1("a", "r", "p", "SHA-512-256")


def test_generated_secrets_are_long_and_distinct() -> None:
    """Generated SIP secrets and tokens are long random strings, never repeated."""
    secrets = {generate_sip_secret() for _ in range(50)}
    assert len(secrets) == 50 and min(map(len, secrets)) >= 32
    tokens = {generate_token() for _ in range(50)}
    assert len(tokens) == 50 and all(t.startswith("ctd_") and len(t) >= 45 for t in tokens)


def test_token_id_is_prefix_of_sha256() -> None:
    """A token is stored as its SHA-256; its id is the first 16 hex digits of that."""
    digest = token_digest("ctd_abc")
    assert digest == hashlib.sha256(b"ctd_abc").hexdigest()
    assert token_id_of_digest(digest) == digest[:16]


class TestPasswordHashing:
    """Argon2id hashing runs on its pool, never inline on the caller's thread."""

    def hashing(
        self, hasher: PasswordHasher | None = None
    ) -> tuple[PasswordHashing, InlineThreadPool]:
        pool = InlineThreadPool()
        return PasswordHashing(InlineReactor(), pool, hasher or cheap_password_hasher()), pool

    def test_hash_and_verify_on_pool(self) -> None:
        """Hashing and verifying are jobs on the pool; the hash is Argon2id."""
        hashing, pool = self.hashing()
        password_hash = success_result_of(hashing.hash("pw"))
        assert password_hash.startswith("$argon2id$")
        assert success_result_of(hashing.verify(password_hash, "pw")) is True
        assert success_result_of(hashing.verify(password_hash, "pW")) is False
        assert pool.jobs == 3

    def test_verify_without_hash_spends_a_verification(self) -> None:
        """Checking a user without a hash still runs a verification job, and fails."""
        hashing, pool = self.hashing()
        assert success_result_of(hashing.verify(None, "")) is False
        assert success_result_of(hashing.verify(None, "anything")) is False
        assert pool.jobs == 2

    def test_garbage_hash_does_not_verify(self) -> None:
        """A corrupt stored hash fails verification instead of raising."""
        hashing, _ = self.hashing()
        assert success_result_of(hashing.verify("not a hash", "pw")) is False

    def test_hash_many_in_order_one_job_each(self) -> None:
        """hash_many gives one hash per password, in order, each a separate pool job."""
        hashing, pool = self.hashing()
        hashes = success_result_of(hashing.hash_many(["a", "b", "c"]))
        assert pool.jobs == 3
        assert [
            success_result_of(hashing.verify(h, p)) for h, p in zip(hashes, "abc", strict=True)
        ] == [True] * 3

    def test_hash_many_reports_the_error(self) -> None:
        """A failing hash makes hash_many fail with that error, not a wrapper."""

        class Broken(PasswordHasher):
            def hash(self, password: str | bytes, *, salt: bytes | None = None) -> str:
                raise MemoryError("no memory for Argon2")

        hashing, _ = self.hashing(Broken())
        failure_result_of(hashing.hash_many(["a", "b"]), MemoryError)

    def test_needs_rehash(self) -> None:
        """A hash made with other parameters than the hasher's needs rehashing."""
        hashing, _ = self.hashing()
        cheap = success_result_of(hashing.hash("pw"))
        assert hashing.needs_rehash(cheap) is False
        stronger, _ = self.hashing(PasswordHasher(time_cost=2, memory_cost=16, parallelism=1))
        assert stronger.needs_rehash(cheap) is True
        assert hashing.needs_rehash("garbage") is True


@pytest.mark.parametrize(
    ("name", "valid"),
    [
        ("alice", True),
        ("a", True),
        ("a.b-c_9", True),
        ("x" * 64, True),
        ("", False),
        ("x" * 65, False),
        ("Alice", False),
        ("al ice", False),
        ("alice@x", False),
        ("al%41", False),
        ("ali:ce", False),
        ("alice\n", False),
    ],
)
def test_username_rule(name: str, valid: bool) -> None:
    """Usernames are 1-64 of a-z 0-9 . _ - (safe SIP user parts)."""
    assert is_valid_username(name) is valid


def test_aor_helpers() -> None:
    """A user's AOR is sip:user@domain (domain lower-cased); its user part comes back."""
    assert user_aor("alice", "Example.COM") == "sip:alice@example.com"
    assert aor_user_part("sip:alice@example.com") == "alice"
    assert aor_user_part("SIPS:bob@example.com") == "bob"
    assert aor_user_part("carol") == "carol"


def test_contact_change_rules() -> None:
    """Expires is never negative; the binding key is the URI, its key, or the RFC 5626 flow."""
    with pytest.raises(ValueError):
        ContactChange("sip:a@h", -1)
    assert ContactChange("sip:a@H", 60).binding_key() == "uri:sip:a@H"
    assert ContactChange("sip:a@H", 60, key="sip:a@h").binding_key() == "uri:sip:a@h"
    assert ContactChange("sip:a@H", 60, instance_id="<urn:x>").binding_key() == "uri:sip:a@H"
    assert (
        ContactChange("sip:a@H", 60, instance_id="<urn:x>", reg_id=2).binding_key()
        == "outbound:<urn:x>#2"
    )


def test_binding_changes_rules() -> None:
    """A wildcard REGISTER has no other contact; Path must be a list, not one string."""
    with pytest.raises(ValueError):
        BindingChanges("c", 1, contacts=[ContactChange("sip:a@h", 0)], wildcard=True)
    with pytest.raises(TypeError):
        BindingChanges("c", 1, path="<sip:p;lr>")
    assert BindingChanges("c", 1, path=["<sip:p;lr>"]).path == ("<sip:p;lr>",)


def test_call_update_vocabulary() -> None:
    """end_reason and who_hung_up only take their documented values."""
    assert CallUpdate(end_reason="callee-busy", who_hung_up="callee").changed_fields() == {
        "end_reason": "callee-busy",
        "who_hung_up": "callee",
    }
    with pytest.raises(ValueError):
        CallUpdate(end_reason="went-home")
    with pytest.raises(ValueError):
        CallUpdate(who_hung_up="nobody")


def test_call_changes_name_every_field_of_a_call_update_with_its_type() -> None:
    """A call's changes (a plain dict) become a CallUpdate field for field, validated."""
    assert list(CallChanges.__annotations__) == [a.name for a in attrs.fields(CallUpdate)]
    changes: CallChanges = {"state": "ended", "ended_at": 2.0, "end_reason": "caller-hangup"}
    assert CallUpdate(**changes).changed_fields() == changes
    with pytest.raises(ValueError):
        CallUpdate(**CallChanges(end_reason="went-home"))


def test_user_changes_cannot_set_and_clear_password() -> None:
    """Setting and clearing the web password at once is a contradiction."""
    with pytest.raises(ValueError):
        UserChanges(password="x", clear_password=True)


def test_secrets_not_in_repr() -> None:
    """Plaintext passwords do not show in the repr of the values carrying them."""
    text = repr(NewUser("alice", password="hunter2", sip_password="s3cr3t")) + repr(
        UserChanges(password="hunter2", sip_password="s3cr3t")
    )
    assert "hunter2" not in text and "s3cr3t" not in text
