"""
Tests for :obj:`clicktodial.sip.digest`: RFC 7616 / RFC 2617 test vectors,
field parsing, challenges, stateless nonces and replay protection.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from clicktodial.sip.digest import (
    DigestAuthenticator,
    DigestCredentials,
    DigestError,
    NonceCountTracker,
    Verdict,
    compute_ha1,
    compute_response,
    format_challenge,
    parse_auth_params,
    parse_authorization,
    select_credentials,
)

SECRET = b"0123456789abcdef0123456789abcdef"
REALM = "example.com"

# RFC 7616 §3.9.1.
RFC7616_REALM = "http-auth@example.org"
RFC7616_NONCE = "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v"
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"
RFC7616_OPAQUE = "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"


def rfc7616_authorization(algorithm: str, response: str) -> str:
    return (
        'Digest username="Mufasa",\r\n'
        f'       realm="{RFC7616_REALM}",\r\n'
        '       uri="/dir/index.html",\r\n'
        f"       algorithm={algorithm},\r\n"
        f'       nonce="{RFC7616_NONCE}",\r\n'
        "       nc=00000001,\r\n"
        f'       cnonce="{RFC7616_CNONCE}",\r\n'
        "       qop=auth,\r\n"
        f'       response="{response}",\r\n'
        f'       opaque="{RFC7616_OPAQUE}"'
    )


class TestVectors:
    """The published examples compute to the published responses."""

    def test_rfc7616_sha256(self) -> None:
        """RFC 7616 §3.9.1, SHA-256: response 753927fa..."""
        expected = "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        ha1 = compute_ha1("Mufasa", RFC7616_REALM, "Circle of Life", "SHA-256")
        assert (
            compute_response(
                ha1,
                RFC7616_NONCE,
                "00000001",
                RFC7616_CNONCE,
                "auth",
                "GET",
                "/dir/index.html",
                "SHA-256",
            )
            == expected
        )
        credentials = parse_authorization(rfc7616_authorization("SHA-256", expected))
        assert credentials.algorithm == "SHA-256"
        assert credentials.response == expected
        assert credentials.opaque == RFC7616_OPAQUE

    def test_rfc7616_md5(self) -> None:
        """RFC 7616 §3.9.1, MD5: response 8ca523f5..."""
        ha1 = compute_ha1("Mufasa", RFC7616_REALM, "Circle of Life", "MD5")
        assert (
            compute_response(
                ha1,
                RFC7616_NONCE,
                "00000001",
                RFC7616_CNONCE,
                "auth",
                "GET",
                "/dir/index.html",
                "MD5",
            )
            == "8ca523f5e9506fed4657c9700eebdbec"
        )

    def test_rfc2617_md5(self) -> None:
        """RFC 2617 §3.5: response 6629fae4..., parsed from the RFC text."""
        value = (
            'Digest username="Mufasa",\r\n'
            '        realm="testrealm@host.com",\r\n'
            '        nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",\r\n'
            '        uri="/dir/index.html",\r\n'
            "        qop=auth,\r\n"
            "        nc=00000001,\r\n"
            '        cnonce="0a4f113b",\r\n'
            '        response="6629fae49393a05397450978507c4ef1",\r\n'
            '        opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        )
        c = parse_authorization(value)
        # No algorithm parameter means MD5 (RFC 7616 §3.3).
        assert c.algorithm == "MD5"
        ha1 = compute_ha1(c.username, c.realm, "Circle Of Life", c.algorithm)
        assert (
            compute_response(ha1, c.nonce, c.nc, c.cnonce, c.qop, "GET", c.uri, c.algorithm)
            == c.response
        )

    def test_ha1_is_hash_of_user_realm_password(self) -> None:
        """HA1 is H(user:realm:password) in lower-case hex."""
        assert compute_ha1("Mufasa", "r", "pw") == hashlib.md5(b"Mufasa:r:pw").hexdigest()
        assert (
            compute_ha1("Mufasa", "r", "pw", "sha-256")
            == hashlib.sha256(b"Mufasa:r:pw").hexdigest()
        )
        with pytest.raises(ValueError):
            compute_ha1("a", "b", "c", "SHA-512")


class TestParsing:
    """Authorization values are parsed strictly where it matters."""

    def test_quoted_string_escapes(self) -> None:
        """A quoted-pair stands for the escaped character (RFC 3261 §25.1)."""
        params = parse_auth_params(r'username="a\"b\\c", realm=x')
        assert params == {"username": 'a"b\\c', "realm": "x"}

    def test_commas_inside_quotes(self) -> None:
        """A comma inside a quoted string does not split parameters."""
        assert parse_auth_params('qop="auth, auth-int", x=1') == {"qop": "auth, auth-int", "x": "1"}

    def test_names_case_insensitive(self) -> None:
        """Parameter names are case-insensitive; values keep their case."""
        assert parse_auth_params('UserName="Bob"') == {"username": "Bob"}

    @pytest.mark.parametrize(
        "text",
        [
            'username="unterminated',
            "username",
            "username=",
            'username="a" realm="b"',
            'username="a", username="b"',
            'x="\\',
        ],
    )
    def test_malformed(self, text: str) -> None:
        """Syntax errors and repeated parameters raise DigestError."""
        with pytest.raises(DigestError):
            parse_auth_params(text)

    @given(st.text(alphabet=st.characters(exclude_characters="\r\n", exclude_categories=["Cs"])))
    def test_quoted_values_round_trip(self, value: str) -> None:
        """Any value we quote in a challenge parses back unchanged."""
        challenge = format_challenge(value, "n", "MD5")
        assert parse_auth_params(challenge[len("Digest ") :])["realm"] == value

    def test_unknown_params_ignored(self) -> None:
        """Unknown directives are ignored (RFC 7616 §3.4)."""
        c = parse_authorization(valid_value(extra=', foo="bar", baz=1'))
        assert c.username == "alice"

    def test_scheme_case_insensitive(self) -> None:
        """The scheme name is case-insensitive."""
        value = valid_value().replace("Digest", "dIgEsT", 1)
        assert parse_authorization(value).username == "alice"

    @pytest.mark.parametrize(
        "value",
        [
            "NoOneKnowsThisScheme opaque-data=here",  # RFC 4475 regaut01
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l",
            "",
            "Digestusername=x",
        ],
    )
    def test_other_schemes_unusable(self, value: str) -> None:
        """Any scheme but Digest gives no usable credentials."""
        with pytest.raises(DigestError):
            parse_authorization(value)

    @pytest.mark.parametrize(
        "change",
        [
            ("qop=auth", "qop=auth-int"),
            ("qop=auth,", ""),
            ("algorithm=MD5", "algorithm=MD5-sess"),
            ("algorithm=MD5", "algorithm=SHA-512-256"),
            ("nc=00000001", "nc=1"),
            ("nc=00000001", "nc=0000000g"),
            ('username="alice"', "username*=UTF-8''alice"),
            ('username="alice"', 'username="alice", userhash=true'),
            ('response="' + "0" * 32 + '"', 'response="xyz"'),
            ('cnonce="c",', ""),
        ],
    )
    def test_unsupported_or_incomplete(self, change: tuple[str, str]) -> None:
        """Features we do not support and missing parameters are refused."""
        value = valid_value()
        assert change[0] in value
        with pytest.raises(DigestError):
            parse_authorization(value.replace(change[0], change[1]))

    def test_select_credentials_picks_our_realm(self) -> None:
        """Among several Authorization fields, the one for our realm wins."""
        other = valid_value().replace(f'realm="{REALM}"', 'realm="other"')
        picked = select_credentials(["Basic abc", other, valid_value()], REALM)
        assert picked is not None and picked.realm == REALM
        assert select_credentials(["Basic abc", other], REALM) is None


def valid_value(extra: str = "") -> str:
    return (
        f'Digest username="alice", realm="{REALM}", nonce="n", '
        'uri="sip:example.com", algorithm=MD5, cnonce="c", nc=00000001, '
        f'qop=auth, response="{"0" * 32}"' + extra
    )


class TestChallenge:
    """Challenges are well-formed and offer SHA-256 before MD5."""

    def test_format(self) -> None:
        """A challenge quotes and escapes the realm and nonce."""
        value = format_challenge('a"b', "n1", "MD5", stale=True)
        assert value == ('Digest realm="a\\"b", nonce="n1", algorithm=MD5, qop="auth", stale=true')
        assert parse_auth_params(value[len("Digest ") :])["realm"] == 'a"b'

    def test_challenges_order_and_shared_nonce(self) -> None:
        """One challenge per algorithm, SHA-256 first, one nonce."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET)
        first, second = auth.challenges()
        p1 = parse_auth_params(first[len("Digest ") :])
        p2 = parse_auth_params(second[len("Digest ") :])
        assert (p1["algorithm"], p2["algorithm"]) == ("SHA-256", "MD5")
        assert p1["nonce"] == p2["nonce"]
        assert p1["qop"] == "auth" and "stale" not in p1
        assert "stale" in parse_auth_params(auth.challenges(stale=True)[0][len("Digest ") :])

    @pytest.mark.parametrize("realm", [REALM, 'we"ird\\realm'])
    @pytest.mark.parametrize("stale", [False, True])
    def test_challenges_are_format_challenge_of_one_fresh_nonce(
        self, realm: str, stale: bool
    ) -> None:
        """Each challenge is exactly format_challenge's text for the offered algorithm and
        the challenge's nonce (the realm quoted and escaped); a new nonce each time."""
        auth = DigestAuthenticator(Clock(), realm, SECRET, algorithms=["SHA-256", "MD5"])
        first = auth.challenges(stale=stale)
        nonce = parse_auth_params(first[0][len("Digest ") :])["nonce"]
        assert auth.nonce_issued_at(nonce) == 0.0
        assert first == [format_challenge(realm, nonce, a, stale=stale) for a in ("SHA-256", "MD5")]
        assert parse_auth_params(auth.challenges()[1][len("Digest ") :])["nonce"] != nonce

    def test_bad_settings(self) -> None:
        """A short secret, a bad lifetime or algorithm are refused."""
        with pytest.raises(ValueError):
            DigestAuthenticator(Clock(), REALM, b"short")
        with pytest.raises(ValueError):
            DigestAuthenticator(Clock(), REALM, SECRET, nonce_lifetime=0)
        with pytest.raises(ValueError):
            DigestAuthenticator(Clock(), REALM, SECRET, algorithms=["SHA-1"])
        with pytest.raises(ValueError):
            DigestAuthenticator(Clock(), REALM, SECRET, algorithms=[])


class Client:
    """A minimal UAC side: answers a challenge like a phone would."""

    def __init__(
        self,
        auth: DigestAuthenticator,
        password: str = "secret",
        username: str = "alice",
        algorithm: str = "SHA-256",
    ) -> None:
        self.auth = auth
        self.username = username
        self.password = password
        self.algorithm = algorithm
        self.nonce = parse_auth_params(auth.challenges()[0][len("Digest ") :])["nonce"]
        self.nc = 0

    def credentials(
        self, method: str = "REGISTER", uri: str = "sip:x", nc: int | None = None
    ) -> DigestCredentials:
        if nc is None:
            self.nc += 1
            nc = self.nc
        nc_text = f"{nc:08x}"
        ha1 = compute_ha1(self.username, REALM, self.password, self.algorithm)
        response = compute_response(
            ha1, self.nonce, nc_text, "cn", "auth", method, uri, self.algorithm
        )
        return DigestCredentials(
            username=self.username,
            realm=REALM,
            nonce=self.nonce,
            uri=uri,
            response=response,
            algorithm=self.algorithm,
            cnonce="cn",
            nc=nc_text,
        )


def verify(
    auth: DigestAuthenticator, c: DigestCredentials, password: str | None = "secret"
) -> Verdict:
    issued_at = auth.check_nonce(c)
    if issued_at is None:
        return Verdict.INVALID
    ha1 = compute_ha1(c.username, REALM, password, c.algorithm) if password is not None else None
    return auth.verify(c, "REGISTER", ha1, issued_at)


class TestVerification:
    """Responses are checked against the stored HA1 with fresh nonces."""

    @pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
    def test_correct_response_ok(self, algorithm: str) -> None:
        """A right response to a fresh nonce authenticates."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET)
        assert verify(auth, Client(auth, algorithm=algorithm).credentials()) is Verdict.OK

    def test_wrong_password_invalid(self) -> None:
        """A wrong password is INVALID."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET)
        c = Client(auth, password="guess").credentials()
        assert verify(auth, c) is Verdict.INVALID

    def test_unknown_user_same_as_wrong_password(self) -> None:
        """An unknown user (no HA1) is INVALID, like a wrong password."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET)
        assert verify(auth, Client(auth).credentials(), password=None) is Verdict.INVALID

    def test_wrong_method_invalid(self) -> None:
        """The method is covered by the digest (HA2)."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET)
        c = Client(auth).credentials(method="INVITE")
        assert verify(auth, c) is Verdict.INVALID

    def test_forged_nonce_rejected_before_lookup(self) -> None:
        """A nonce with a bad MAC, form or foreign realm is not ours."""
        clock = Clock()
        auth = DigestAuthenticator(clock, REALM, SECRET)
        nonce = auth.new_nonce()
        raw = bytearray(base64.urlsafe_b64decode(nonce))
        raw[0] ^= 1  # move the timestamp: the MAC no longer fits
        forged = base64.urlsafe_b64encode(bytes(raw)).decode()
        assert auth.nonce_issued_at(forged) is None
        assert auth.nonce_issued_at("short") is None
        assert auth.nonce_issued_at("!" * len(nonce)) is None
        assert auth.nonce_issued_at(nonce) == 0.0
        other = DigestAuthenticator(clock, REALM, b"another secret of 32 bytes!!!!!")
        assert other.nonce_issued_at(nonce) is None
        other_realm = DigestAuthenticator(clock, "other.org", SECRET)
        assert other_realm.nonce_issued_at(nonce) is None

    @pytest.mark.parametrize("secret", [SECRET, b"k" * 64, b"a secret longer than a block " * 4])
    def test_nonce_is_base64url_of_time_random_and_hmac_sha256(self, secret: bytes) -> None:
        """A nonce is base64url(timestamp ms, 12 random bytes, HMAC-SHA256(secret, those +
        realm) truncated to 16 bytes): the form every node of a domain, older versions
        included, issues and accepts (secrets shorter than, equal to, longer than a block)."""
        clock = Clock()
        clock.advance(1234.5)
        auth = DigestAuthenticator(clock, REALM, secret)
        for _ in range(20):
            nonce = auth.new_nonce()
            raw = base64.urlsafe_b64decode(nonce)
            head, mac = raw[:20], raw[20:]
            assert int.from_bytes(head[:8], "big") == 1234500
            assert mac == hmac.digest(secret, head + REALM.encode(), "sha256")[:16]
            assert base64.urlsafe_b64encode(raw).decode() == nonce
            assert auth.nonce_issued_at(nonce) == 1234.5
        for bad in ("=" * len(nonce), "+" + nonce[1:], nonce[:-1] + "\u00e9"):
            assert auth.nonce_issued_at(bad) is None

    def test_nonce_shared_between_nodes(self) -> None:
        """A node with the same secret accepts another node's nonce."""
        clock = Clock()
        node_a = DigestAuthenticator(clock, REALM, SECRET)
        node_b = DigestAuthenticator(clock, REALM, SECRET)
        c = Client(node_a).credentials()
        assert verify(node_b, c) is Verdict.OK

    def test_expired_nonce_stale_only_if_right(self) -> None:
        """An expired nonce is STALE with the right password, else INVALID."""
        clock = Clock()
        auth = DigestAuthenticator(clock, REALM, SECRET, nonce_lifetime=300)
        client = Client(auth)
        clock.pump([10.0] * 29)
        assert verify(auth, client.credentials()) is Verdict.OK
        clock.pump([1.0] * 11)
        assert verify(auth, client.credentials()) is Verdict.STALE
        assert verify(auth, client.credentials(), password="wrong") is Verdict.INVALID
        assert verify(auth, client.credentials(), password=None) is Verdict.INVALID

    def test_nc_must_increase(self) -> None:
        """A repeated or lower nonce count is refused as STALE (replay)."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET)
        client = Client(auth)
        assert verify(auth, client.credentials(nc=1)) is Verdict.OK
        assert verify(auth, client.credentials(nc=1)) is Verdict.STALE
        assert verify(auth, client.credentials(nc=3)) is Verdict.OK
        assert verify(auth, client.credentials(nc=2)) is Verdict.STALE
        assert verify(auth, client.credentials(nc=4)) is Verdict.OK

    def test_wrong_realm_or_algorithm_not_ours(self) -> None:
        """Credentials for another realm or an algorithm not offered fail."""
        auth = DigestAuthenticator(Clock(), REALM, SECRET, algorithms=["SHA-256"])
        c = Client(auth, algorithm="MD5").credentials()
        assert auth.check_nonce(c) is None
        other = DigestAuthenticator(Clock(), "other", SECRET)
        assert other.check_nonce(Client(auth).credentials()) is None

    def test_tracker_entries_expire_with_nonces(self) -> None:
        """Tracked counts leave memory once their nonce has expired."""
        clock = Clock()
        auth = DigestAuthenticator(clock, REALM, SECRET, nonce_lifetime=60)
        for _ in range(5):
            assert verify(auth, Client(auth).credentials()) is Verdict.OK
        assert auth.tracked_nonces == 5
        clock.pump([1.0] * 61)
        assert verify(auth, Client(auth).credentials()) is Verdict.OK
        assert auth.tracked_nonces == 1


class TestNonceCountTracker:
    """The replay tracker is bounded and never reopens a replay window."""

    def test_bounded_and_evicted_nonces_not_accepted_again(self) -> None:
        """Past capacity the oldest entry goes; its nonce is then refused."""
        tracker = NonceCountTracker(max_entries=2)
        assert tracker.accept("a", 1.0, 100.0, 1, now=5.0)
        assert tracker.accept("b", 2.0, 100.0, 1, now=5.0)
        assert tracker.accept("c", 3.0, 100.0, 1, now=5.0)
        assert len(tracker) == 2
        # "a" was evicted: a replay of it must not be accepted.
        assert not tracker.accept("a", 1.0, 100.0, 1, now=5.0)
        assert not tracker.accept("a", 1.0, 100.0, 9, now=5.0)
        # A nonce issued after the evicted one is still welcome.
        assert tracker.accept("d", 4.0, 100.0, 1, now=5.0)

    def test_invalid_size(self) -> None:
        """The bound must be positive."""
        with pytest.raises(ValueError):
            NonceCountTracker(0)
