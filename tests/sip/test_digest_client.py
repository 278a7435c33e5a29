"""
Tests for the client side of :obj:`clicktodial.sip.digest`: parsing a provider's
challenge and answering it (RFC 2069, RFC 2617, RFC 7616, RFC 8760).
"""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.task import Clock

from clicktodial.sip.digest import (
    DigestAuthenticator,
    DigestChallenge,
    DigestError,
    Verdict,
    authorization_for,
    compute_ha1,
    compute_response,
    format_challenge,
    new_cnonce,
    parse_auth_params,
    parse_authorization,
    parse_challenge,
    select_challenge,
)

# RFC 7616 §3.9.1.
RFC7616_CHALLENGE = (
    'Digest\r\n realm="http-auth@example.org",\r\n qop="auth, auth-int",\r\n'
    " algorithm={algorithm},\r\n"
    ' nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",\r\n'
    ' opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"'
)
RFC7616_CNONCE = "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"

# RFC 2617 §3.5.
RFC2617_CHALLENGE = (
    'Digest realm="testrealm@host.com", qop="auth,auth-int",'
    ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
    ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
)


def _h(algorithm: str, text: str) -> str:
    if algorithm.upper().startswith("SHA-256"):
        return hashlib.sha256(text.encode()).hexdigest()
    return hashlib.md5(text.encode()).hexdigest()


class TestVectors:
    """The RFC worked examples, answered by the client side."""

    @pytest.mark.parametrize(
        ("algorithm", "response"),
        [
            ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
            ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ],
    )
    def test_rfc7616(self, algorithm: str, response: str) -> None:
        """RFC 7616 §3.9.1: the response for Mufasa / Circle of Life."""
        challenge = parse_challenge(RFC7616_CHALLENGE.format(algorithm=algorithm))
        value = authorization_for(
            challenge,
            "GET",
            "/dir/index.html",
            "Mufasa",
            "Circle of Life",
            cnonce=RFC7616_CNONCE,
            nc=1,
        )
        params = parse_auth_params(value.removeprefix("Digest "))
        assert params["response"] == response
        assert params["opaque"] == "FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS"
        assert params["qop"] == "auth"
        assert params["nc"] == "00000001"
        assert params["cnonce"] == RFC7616_CNONCE
        assert params["algorithm"] == algorithm

    def test_rfc2617(self) -> None:
        """RFC 2617 §3.5: the response for Mufasa / Circle Of Life."""
        challenge = parse_challenge(RFC2617_CHALLENGE)
        assert challenge.algorithm == "MD5"  # absent means MD5
        value = authorization_for(
            challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", cnonce="0a4f113b", nc=1
        )
        params = parse_auth_params(value.removeprefix("Digest "))
        assert params["response"] == "6629fae49393a05397450978507c4ef1"

    def test_rfc2069_without_qop(self) -> None:
        """RFC 2069 §2.4: no qop means no nc, no cnonce, KD(HA1, nonce:HA2).

        The RFC prints e966c932...; its errata give the right value.
        """
        challenge = parse_challenge(
            'Digest realm="testrealm@host.com",'
            ' nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",'
            ' opaque="5ccc069c403ebaf9f0171e9517f40e41"'
        )
        assert challenge.qop is None
        value = authorization_for(
            challenge, "GET", "/dir/index.html", "Mufasa", "CircleOfLife", cnonce="unused"
        )
        params = parse_auth_params(value.removeprefix("Digest "))
        assert params["response"] == "1949323746fe6a43ef61f9606e7febea"
        assert "nc" not in params and "cnonce" not in params
        assert "qop" not in params


class TestAnswers:
    """How the answer is computed beyond the worked examples."""

    @pytest.mark.parametrize("algorithm", ["MD5-sess", "SHA-256-sess"])
    def test_sess_algorithms(self, algorithm: str) -> None:
        """RFC 7616 §3.4.2: HA1 of -sess folds in the nonce and cnonce."""
        challenge = DigestChallenge(realm="r", nonce="n", algorithm=algorithm, qops=("auth",))
        value = authorization_for(
            challenge, "REGISTER", "sip:p.example", "u", "pw", cnonce="c", nc=2
        )
        ha1 = _h(algorithm, _h(algorithm, "u:r:pw") + ":n:c")
        ha2 = _h(algorithm, "REGISTER:sip:p.example")
        expected = _h(algorithm, f"{ha1}:n:00000002:c:auth:{ha2}")
        assert parse_auth_params(value.removeprefix("Digest "))["response"] == expected

    def test_auth_int_hashes_the_body(self) -> None:
        """RFC 7616 §3.4.3: with only auth-int offered, A2 includes H(body)."""
        challenge = DigestChallenge(realm="r", nonce="n", algorithm="MD5", qops=("auth-int",))
        body = b"v=0\r\n"
        value = authorization_for(
            challenge, "INVITE", "sip:1@p", "u", "pw", cnonce="c", nc=1, body=body
        )
        ha1 = _h("MD5", "u:r:pw")
        ha2 = _h("MD5", "INVITE:sip:1@p:" + hashlib.md5(body).hexdigest())
        expected = _h("MD5", f"{ha1}:n:00000001:c:auth-int:{ha2}")
        params = parse_auth_params(value.removeprefix("Digest "))
        assert params["response"] == expected
        assert params["qop"] == "auth-int"

    def test_auth_preferred_over_auth_int(self) -> None:
        """With both offered we answer qop=auth (no body needed)."""
        challenge = parse_challenge(RFC2617_CHALLENGE)
        assert challenge.qops == ("auth", "auth-int")
        assert challenge.qop == "auth"

    def test_answer_accepted_by_our_server(self) -> None:
        """Our client's answer is what our own authenticator accepts."""
        server = DigestAuthenticator(Clock(), "example.com", b"s" * 32)
        # Both challenges share one nonce: the count must grow.
        for nc, header in enumerate(server.challenges(), start=1):
            challenge = parse_challenge(header)
            value = authorization_for(
                challenge,
                "REGISTER",
                "sip:example.com",
                "alice",
                "secret",
                cnonce=new_cnonce(),
                nc=nc,
            )
            credentials = parse_authorization(value)
            issued_at = server.check_nonce(credentials)
            assert issued_at is not None
            ha1 = compute_ha1("alice", "example.com", "secret", credentials.algorithm)
            assert server.verify(credentials, "REGISTER", ha1, issued_at) is Verdict.OK

    def test_quotes_escaped_in_username(self) -> None:
        """Values are quoted-strings: a quote in a username is escaped."""
        challenge = DigestChallenge(realm="r", nonce="n", qops=("auth",))
        value = authorization_for(challenge, "REGISTER", "sip:p", 'a"b', "pw", cnonce="c")
        assert parse_auth_params(value.removeprefix("Digest "))["username"] == 'a"b'

    @pytest.mark.parametrize("nc", [0, -1, 2**32])
    def test_nonce_count_range(self, nc: int) -> None:
        """nc is 8 hex digits and starts at 1."""
        challenge = DigestChallenge(realm="r", nonce="n", qops=("auth",))
        with pytest.raises(ValueError):
            authorization_for(challenge, "REGISTER", "sip:p", "u", "pw", cnonce="c", nc=nc)

    def test_cnonce_fresh(self) -> None:
        """Each cnonce is new and carries 128 bits."""
        values = {new_cnonce() for _ in range(50)}
        assert len(values) == 50
        assert all(len(v) == 22 for v in values)


class TestParsing:
    """Challenges we can and cannot answer."""

    def test_stale_and_opaque_exposed(self) -> None:
        """stale=true (any case) and opaque are exposed."""
        challenge = parse_challenge(
            'digest realm="r", nonce="n", stale=TRUE, opaque="o", algorithm=sha-256, qop="auth"'
        )
        assert challenge == DigestChallenge(
            realm="r", nonce="n", algorithm="SHA-256", qops=("auth",), opaque="o", stale=True
        )

    @pytest.mark.parametrize(
        "value",
        [
            'Basic realm="r"',
            'Digest nonce="n"',
            'Digest realm="r"',
            'Digest realm="r", nonce="n", algorithm=SHA-512-256',
            'Digest realm="r", nonce="n", qop="auth-conf"',
            'Digest realm="r", nonce="n", realm="x"',
            'Digest realm="r" nonce="n"',
            'Digestrealm="r", nonce="n"',
        ],
    )
    def test_unusable(self, value: str) -> None:
        """Another scheme, missing or repeated params, unknown algorithm or
        qop: a clear DigestError, never another exception."""
        with pytest.raises(DigestError):
            parse_challenge(value)

    def test_select_prefers_sha256(self) -> None:
        """RFC 8760 §2.4: the strongest usable challenge wins."""
        chosen = select_challenge(
            [
                'Digest realm="r", nonce="a", algorithm=MD5, qop="auth"',
                'Digest realm="r", nonce="b", algorithm=SHA-256, qop="auth"',
            ]
        )
        assert chosen is not None and chosen.algorithm == "SHA-256"

    def test_select_skips_unusable(self) -> None:
        """Unusable values are skipped; none usable gives None."""
        chosen = select_challenge(
            [
                'Basic realm="r"',
                'Digest realm="r", nonce="a", algorithm=SHA-512-256',
                'Digest realm="r", nonce="b"',
            ]
        )
        assert chosen is not None and chosen.nonce == "b"
        assert select_challenge(['Basic realm="r"']) is None


_TEXT = st.text(
    st.characters(min_codepoint=32, max_codepoint=0x2FF, exclude_characters="\x7f"),
    min_size=1,
    max_size=20,
)


@given(
    username=_TEXT,
    password=_TEXT,
    realm=_TEXT,
    nonce=_TEXT,
    algorithm=st.sampled_from(["MD5", "SHA-256"]),
    nc=st.integers(1, 2**32 - 1),
)
def test_answer_parses_back_and_verifies(
    username: str, password: str, realm: str, nonce: str, algorithm: str, nc: int
) -> None:
    """Whatever the values (quotes, backslashes, commas), the server side parses our
    answer back to the same values, and the response is the RFC 7616 one."""
    challenge = parse_challenge(format_challenge(realm, nonce, algorithm, opaque='o,"p'))
    value = authorization_for(
        challenge, "INVITE", "sip:+4930@p.example", username, password, cnonce="c", nc=nc
    )
    credentials = parse_authorization(value)
    assert (credentials.username, credentials.realm, credentials.nonce) == (username, realm, nonce)
    assert credentials.opaque == 'o,"p'
    assert credentials.nc_value == nc
    ha1 = compute_ha1(username, realm, password, algorithm)
    assert credentials.response == compute_response(
        ha1, nonce, credentials.nc, "c", "auth", "INVITE", "sip:+4930@p.example", algorithm
    )
