"""
The ``[trunk:NAME]`` sections: one SIP trunk to a provider each (docs/trunks.md).

``clicktodial.config`` accepts the shape ``[trunk:NAME]`` (like a plugin's section); this
module validates the keys with the same declarative :func:`~clicktodial.config.setting`
machinery as the built-in sections, so every problem is one line naming the file, the
``[trunk:NAME]`` section and the key. The password is never echoed in an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from clicktodial.config import (
    Config,
    InvalidSetting,
    build_section,
    parse_choice,
    parse_count_in,
    parse_network_set,
    parse_number_in,
    parse_seconds_or_zero,
    parse_yes_no,
    setting,
)
from clicktodial.netaddr import NetworkSet
from clicktodial.sip.uri import URI, parse_uri

__all__ = [
    "E164_RE",
    "TrunkConfig",
    "parse_e164",
    "parse_proxy_uri",
    "parse_user_caller_ids",
    "trunk_configs",
]

#: An E.164 number as we present and dial it: ``+``, then 2 to 15 digits (ITU-T E.164 §6).
E164_RE = re.compile(r"\+[1-9][0-9]{1,14}")
# RFC 3261 §25.1 user characters, without ";", "?", "/" and escapes: a user name of the
# configuration never adds a URI parameter or header when put in a URI.
_USER_RE = re.compile(r"[A-Za-z0-9\-_.!~*'()&=+$,]{1,64}")
_TRANSPORTS = ("udp", "tcp", "tls")


def parse_proxy_uri(text: str) -> URI:
    """
    The provider's proxy: a ``sip:`` or ``sips:`` URI with a host, an optional port and an
    optional ``;transport=udp|tcp|tls``; no user part (``sip:provider.example:5060``).
    """
    try:
        uri = parse_uri(text)
    except ValueError as e:
        raise ValueError(f"not a SIP URI: {text!r} ({e})") from None
    if uri.scheme not in ("sip", "sips"):
        raise ValueError(f"not a sip: or sips: URI: {text!r}")
    if uri.user is not None or uri.headers:
        raise ValueError(f"the proxy is a host, without a user part or headers: {text!r}")
    transport = uri.param("transport")
    if transport is not None and transport.lower() not in _TRANSPORTS:
        raise ValueError(f"unknown transport {transport!r} in {text!r} (udp, tcp or tls)")
    if uri.scheme == "sips" and transport is not None and transport.lower() == "udp":
        raise ValueError(f"a sips: URI cannot use UDP: {text!r}")
    return uri


def parse_e164(text: str) -> str:
    """An E.164 number: ``+`` and 2 to 15 digits, the first not 0."""
    if not E164_RE.fullmatch(text):
        raise ValueError(f"not an E.164 number (+ and 2-15 digits): {text!r}")
    return text


def _parse_optional_e164(text: str) -> str | None:
    return parse_e164(text) if text else None


def _parse_user(text: str) -> str:
    if not _USER_RE.fullmatch(text):
        raise ValueError(f"not a SIP user name: {text!r}")
    return text


def _parse_optional_user(text: str) -> str | None:
    return _parse_user(text) if text else None


def _parse_password(text: str) -> str:
    # Not echoed: the value is a secret.
    if not text:
        raise ValueError("the password is empty")
    if any(ord(c) < 32 or ord(c) == 127 for c in text):
        raise ValueError("the password has control characters")
    return text


def _parse_optional_text(text: str) -> str | None:
    return text or None


def _parse_host(text: str) -> str | None:
    if not text:
        return None
    try:
        uri = parse_uri(f"sip:{text}")
    except ValueError:
        raise ValueError(f"not a host name or address: {text!r}") from None
    if uri.port is not None or uri.params or uri.user is not None:
        raise ValueError(f"a host name or address only, without port or parameters: {text!r}")
    return uri.host


def parse_user_caller_ids(text: str) -> Mapping[str, str]:
    """``alice=+4930123456, bob=+4930123457``: per-user caller IDs; empty: none."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        user, equals, number = (x.strip() for x in item.partition("="))
        if not equals or not user:
            raise ValueError(f"expected user=+NUMBER, not {item!r}")
        if user in result:
            raise ValueError(f"user {user!r} is given twice")
        result[user] = parse_e164(number)
    return result


# The limits of a trunk's numbers (expiry in seconds, calls at once, calls per second).
_parse_expires = parse_count_in(60, 86400)
_parse_max_calls = parse_count_in(1, 100_000)
_parse_max_cps = parse_number_in(0.01, 10_000)


@attrs.frozen
class TrunkConfig:
    """One ``[trunk:NAME]`` section. See ``conf/example.ini`` and docs/trunks.md."""

    proxy: URI = attrs.field(
        metadata=setting(
            parse_proxy_uri,
            None,
            "The provider's proxy (outbound proxy and registrar) as a SIP URI: sip:HOST[:PORT]"
            "[;transport=udp|tcp|tls], or sips:. A host name without port is resolved with"
            " RFC 3263 (NAPTR, SRV, A/AAAA); with a port or an IP address, without SRV.",
        )
    )
    domain: str | None = attrs.field(
        metadata=setting(
            _parse_host,
            "",
            "The provider's SIP domain: the host of our AOR, of the REGISTER Request-URI and of"
            " the numbers we call. Empty: the proxy's host.",
        )
    )
    username: str = attrs.field(
        metadata=setting(
            _parse_user, None, "Our account at the provider: the user part of our AOR (From, To)."
        )
    )
    auth_username: str | None = attrs.field(
        metadata=setting(
            _parse_optional_user,
            "",
            "The user name for digest authentication, when the provider's differs from"
            " username. Empty: username.",
        )
    )
    password: str = attrs.field(
        repr=False,
        metadata=setting(
            _parse_password,
            None,
            "The digest password (keep the file readable by the daemon only).",
        ),
    )
    realm: str | None = attrs.field(
        metadata=setting(
            _parse_optional_text,
            "",
            "Answer only digest challenges of this realm. Empty: any realm the provider's proxy"
            " sends.",
        )
    )
    register: bool = attrs.field(
        metadata=setting(parse_yes_no, "no", "Whether to register with the provider (yes or no).")
    )
    register_expires: int = attrs.field(
        metadata=setting(
            _parse_expires,
            "600",
            "The registration expiry asked for (60-86400 s); it is refreshed at half of what the"
            " provider grants.",
        )
    )
    caller_id: str | None = attrs.field(
        metadata=setting(
            _parse_optional_e164,
            "",
            "The E.164 number presented on calls (From user and P-Asserted-Identity). Empty:"
            " username.",
        )
    )
    user_caller_ids: Mapping[str, str] = attrs.field(
        hash=False,
        metadata=setting(
            parse_user_caller_ids,
            "",
            "Per-user caller IDs overriding caller_id: user=+NUMBER, comma-separated.",
        ),
    )
    keepalive_interval: float = attrs.field(
        metadata=setting(
            parse_seconds_or_zero,
            "30",
            "Seconds between OPTIONS keep-alives that mark the trunk up or down; 0: none.",
        )
    )
    max_calls: int = attrs.field(
        metadata=setting(_parse_max_calls, "10", "The most calls through the trunk at once.")
    )
    max_cps: float = attrs.field(
        metadata=setting(
            _parse_max_cps, "1", "The most new calls per second through the trunk (may be 0.5)."
        )
    )
    inbound: str = attrs.field(
        metadata=setting(
            parse_choice("refuse"),
            "refuse",
            "What to do with requests arriving from the trunk: refuse (403; they are never"
            " routed anywhere).",
        )
    )
    inbound_sources: NetworkSet = attrs.field(
        metadata=setting(
            parse_network_set,
            "-",
            "Addresses and networks the provider sends from besides its proxy's addresses"
            " (refused like those), comma-separated; -: none.",
        )
    )

    def __attrs_post_init__(self) -> None:
        if self.keepalive_interval and self.keepalive_interval < 5:
            raise InvalidSetting(
                "keepalive_interval", "at least 5 seconds (or 0 for no keep-alive)"
            )

    @property
    def host(self) -> str:
        """The provider's domain: ``domain``, else the proxy's host."""
        return self.domain if self.domain is not None else self.proxy.host

    @property
    def auth_user(self) -> str:
        """The digest user name."""
        return self.auth_username if self.auth_username is not None else self.username


def trunk_configs(config: Config) -> dict[str, TrunkConfig]:
    """
    Every ``[trunk:NAME]`` section of ``config``, validated, by name in file order.

    :raises clicktodial.config.ConfigError: ``FILE: [trunk:NAME] KEY: PROBLEM``.
    """
    return {
        name: build_section(
            config.source, f"trunk:{name}", TrunkConfig, config.plugins.options("trunk", name)
        )
        for name in config.plugins.names("trunk")
    }
