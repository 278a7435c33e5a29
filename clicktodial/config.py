"""
Configuration: one INI file, parsed once at start-up into frozen, validated values.

The schema is declarative. Each INI section is a frozen attrs class below; each key is a field
whose metadata (:class:`Setting`) holds the parser that turns the INI text into a value, the
default (as INI text, so defaults go through the same parser as the file), and a doc string.
Adding a key is adding a field; :func:`iter_settings` walks the schema, which lets a test check
that ``conf/example.ini`` documents every key.

Anything wrong stops start-up with a :class:`ConfigError` whose message is one line naming the
file, section and key: an unreadable file, an unknown section or key, a value its parser rejects,
a missing required key.

The INI dialect is :mod:`configparser` without interpolation and without a ``[DEFAULT]``
section; keys are case-sensitive; comments are whole lines starting with ``#`` or ``;``.
"""

import ast
import configparser
import ipaddress
import math
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import attrs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from twisted.logger import LogLevel

from clicktodial import __version__
from clicktodial.dialplan.numbers import NumberingPlan
from clicktodial.dialplan.plan import (
    ALLOWABLE_CLASSES,
    DEFAULT_ALLOWED,
    DialPlan,
    PrefixTables,
    Route,
    country_defaults,
)
from clicktodial.netaddr import NetworkSet
from clicktodial.store.values import is_valid_username

__all__ = [
    "CallsConfig",
    "ClusterConfig",
    "Config",
    "ConfigError",
    "DaemonConfig",
    "HostPort",
    "LimitsConfig",
    "LocationConfig",
    "LogConfig",
    "MediaConfig",
    "PluginSections",
    "RegistrarConfig",
    "Setting",
    "SipConfig",
    "StoreConfig",
    "WebConfig",
    "build_section",
    "ini_section_name",
    "iter_settings",
    "load_config",
    "parse_config",
    "section_names",
]


class ConfigError(Exception):
    """
    The configuration cannot be used.

    ``str()`` is one line: ``FILE: [SECTION] KEY: PROBLEM``, with the section and key left out
    when the problem is not about one (an unreadable file, a line that is not ``key = value``).
    """

    def __init__(
        self, filename: str, problem: str, section: str | None = None, key: str | None = None
    ) -> None:
        self.filename = filename
        self.problem = problem
        self.section = section
        self.key = key
        super().__init__(filename, problem, section, key)

    def __str__(self) -> str:
        where = self.filename
        if self.section is not None:
            where += f": [{self.section}]"
            if self.key is not None:
                where += f" {self.key}"
        return f"{where}: {self.problem}"


class InvalidSetting(ValueError):
    """
    Raised by a section's cross-key checks: names the key that has to change.

    Parsers of single values raise plain :class:`ValueError`; the loader knows their key.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(problem)
        self.key = key
        self.problem = problem


@attrs.frozen
class Setting:
    """
    How one INI key is read.

    :ivar parse: turns the stripped INI text into the value; raises :class:`ValueError` with a
        message that quotes the bad text and says what is expected.
    :ivar default: the value used when the key is absent, as INI text; ``None`` if required.
    :ivar doc: one or two sentences for the reference (``conf/example.ini``).
    """

    parse: Callable[[str], Any]
    default: str | None
    doc: str


_SETTING = "clicktodial.config.setting"
_SECTION_DOC = "clicktodial.config.section"
#: The INI name of a section whose attribute name differs (``[media:rtpengine]``).
_SECTION_NAME = "clicktodial.config.section_name"


def setting(parse: Callable[[str], Any], default: str | None, doc: str) -> dict[str, Setting]:
    """Field metadata declaring an INI key: ``attrs.field(metadata=setting(...))``."""
    return {_SETTING: Setting(parse=parse, default=default, doc=doc)}


# --- value parsers -------------------------------------------------------------------------
# Each takes the stripped INI text and returns a value or raises ValueError("... 'text' ...").

_HOST_PORT_HINT = "expected host:port, IPv6 as [::1]:5060"


@attrs.frozen
class HostPort:
    """An IP address and port to listen on; ``str()`` gives the INI form back."""

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_workers(text: str) -> int:
    """A number of worker processes 1-256, or ``auto``: one per core."""
    if text == "auto":
        return max(1, os.cpu_count() or 1)
    if not text.isascii() or not text.isdigit() or not 1 <= int(text) <= 256:
        raise ValueError(f"invalid number of workers {text!r} (expected 1-256 or auto)")
    return int(text)


def parse_port(text: str) -> int:
    """A port number 0-65535 (0: the system picks a free one)."""
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise ValueError(f"invalid port {text!r}")
    return int(text)


def parse_host_port(text: str) -> HostPort:
    """``127.0.0.1:5060``, ``0.0.0.0:5060``, ``[::1]:5060``: an IP address literal and a port."""
    bracketed = re.fullmatch(r"\[([^\]]*)\]:([^:]*)", text)
    if bracketed:
        host, port = bracketed.groups()
        version = 6
    elif text.count(":") == 1:
        host, port = text.split(":")
        version = 4
    else:
        raise ValueError(f"invalid address {text!r} ({_HOST_PORT_HINT})")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is None or address.version != version:
        raise ValueError(f"invalid host {host!r} in {text!r} (an IP address; {_HOST_PORT_HINT})")
    try:
        port_number = parse_port(port)
    except ValueError as e:
        raise ValueError(f"{e} ({_HOST_PORT_HINT})") from None
    return HostPort(host=address.compressed, port=port_number)


SIP_TRANSPORTS = ("udp", "tcp", "tls")


def parse_transports(text: str) -> tuple[str, ...]:
    """A non-empty, comma-separated subset of ``udp, tcp, tls``, in the order given."""
    hint = f"expected a comma-separated subset of {', '.join(SIP_TRANSPORTS)}"
    names = [name.strip().lower() for name in text.split(",")]
    if names == [""]:
        raise ValueError(f"no transport given ({hint})")
    for i, name in enumerate(names):
        if name not in SIP_TRANSPORTS:
            raise ValueError(f"unknown transport {name!r} ({hint})")
        if name in names[:i]:
            raise ValueError(f"transport {name!r} listed twice")
    return tuple(names)


# RFC 3261 §25.1: hostname = *( domainlabel "." ) toplabel; toplabel starts with a letter.
_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_TOP_LABEL = r"[A-Za-z](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?:{_DOMAIN_LABEL}\.)*{_TOP_LABEL}")


def parse_sip_domain(text: str) -> str:
    """
    The SIP domain of our AORs: a hostname or an IP address.

    Hostnames are lowercased (RFC 3261 §19.1.4 compares hosts case-insensitively); an IPv6
    address, with or without brackets, comes back bracketed as it appears in a SIP URI
    (RFC 3261 §25.1 ``IPv6reference``).
    """
    bracketed = text.startswith("[") and text.endswith("]")
    try:
        address = ipaddress.ip_address(text[1:-1] if bracketed else text)
    except ValueError:
        if not bracketed and len(text) <= 253 and _HOSTNAME.fullmatch(text):
            return text.lower()
        raise ValueError(
            f"invalid domain {text!r} (expected a hostname or an IP address)"
        ) from None
    if address.version == 6:
        return f"[{address.compressed}]"
    if bracketed:
        raise ValueError(f"invalid domain {text!r} (brackets are for IPv6 addresses only)")
    return address.compressed


def parse_seconds(text: str) -> float:
    """A duration in seconds, a finite number greater than zero (``0.5``, ``4``)."""
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"invalid duration {text!r} (expected seconds > 0, e.g. 0.5)")
    return seconds


def parse_header_text(text: str) -> str:
    """Text for a SIP header value: not empty, no control characters (no CR/LF injection)."""
    if not text:
        raise ValueError("must not be empty")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"{text!r} contains a control character")
    return text


_ENDPOINT_TYPE = re.compile(r"[a-z][a-z0-9_+.-]*", re.IGNORECASE)


def _split_endpoint(text: str) -> list[str]:
    # serverFromString's syntax: fields split on ':', a backslash escapes the next character.
    fields, current, chars = [], "", iter(text)
    for c in chars:
        if c == ":":
            fields.append(current)
            current = ""
        elif c == "\\":
            current += next(chars, "")
        else:
            current += c
    fields.append(current)
    return fields


def parse_stream_endpoint(text: str) -> str:
    """
    A Twisted stream server endpoint description (``tcp:8080:interface=127.0.0.1``,
    ``unix:/run/clicktodial/web.sock``, ``systemd:domain=INET:index=0``).

    Only the shape is checked here: ``TYPE:ARGS``, and a TCP or SSL port must be a number.
    Whether an installed endpoint parser serves the type is start-up's question
    (:mod:`clicktodial.startup`), as is the rest: a ``systemd:`` endpoint only makes sense
    under systemd, and an ``ssl:`` one reads certificate files.
    """
    fields = _split_endpoint(text)
    kind = fields[0].lower()
    if len(fields) < 2 or not _ENDPOINT_TYPE.fullmatch(kind):
        raise ValueError(
            f"invalid endpoint {text!r} (expected TYPE:ARGS such as tcp:8080:interface=127.0.0.1)"
        )
    if kind in ("tcp", "tcp6", "ssl"):
        positional = [f for f in fields[1:] if "=" not in f]
        named = dict(f.split("=", 1) for f in fields[1:] if "=" in f)
        port = named.get("port", positional[0] if positional else "")
        try:
            parse_port(port)
        except ValueError as e:
            raise ValueError(f"{e} in endpoint {text!r}") from None
    return text


_PLUGIN_NAME = re.compile(r"[a-z][a-z0-9_]*")


def parse_plugin_name(text: str) -> str:
    """The name of a plugin: lowercase letters, digits and underscores, starting with a letter."""
    if not _PLUGIN_NAME.fullmatch(text):
        raise ValueError(f"invalid name {text!r} (expected a plugin name such as 'sql')")
    return text


def parse_database_url(text: str) -> URL:
    """
    A SQLAlchemy database URL. The text is not echoed in the error: it may hold a password.
    """
    try:
        return make_url(text)
    except (ArgumentError, ValueError):
        raise ValueError(
            "invalid SQLAlchemy URL (expected e.g. sqlite:///var/clicktodial.sqlite or"
            " postgresql+psycopg://user@host/dbname)"
        ) from None


def parse_unicast_address(text: str) -> str:
    """An IP address literal that can be named in SDP: not 0.0.0.0/::, not multicast."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ValueError(f"invalid address {text!r} (expected an IP address)") from None
    if address.is_unspecified or address.is_multicast:
        raise ValueError(f"{text!r} is not a unicast address (SDP must name it)")
    return address.compressed


def parse_port_range(text: str) -> tuple[int, int]:
    """``LOW-HIGH``: UDP ports 1-65535 holding at least one even port (RTP, RFC 3550 §11)."""
    low_text, sep, high_text = text.partition("-")
    try:
        low, high = parse_port(low_text.strip()), parse_port(high_text.strip())
    except ValueError:
        low = high = 0
    if not sep or not 0 < low <= high or low + (low % 2) > high:
        raise ValueError(f"invalid port range {text!r} (expected LOW-HIGH with an even port)")
    return low, high


def parse_ringback(text: str) -> str:
    """
    ``none``, a tone region (``us``, ``uk``, ``eu``) or ``file:PATH`` of an 8 kHz mono
    16-bit WAV file. Only the syntax is checked here: start-up opens the file
    (:mod:`clicktodial.startup`), so that a bad file stops it naming file, section and key.
    """
    from clicktodial.media.tones import REGIONS

    if text == "none" or text in REGIONS:
        return text
    if text.startswith("file:") and len(text) > len("file:"):
        return text
    raise ValueError(
        f"invalid ringback {text!r} (expected none, {', '.join(REGIONS)} or file:PATH)"
    )


def parse_choice(*choices: str) -> Callable[[str], str]:
    """A parser accepting exactly one of ``choices``."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"invalid value {text!r} (expected one of: {', '.join(choices)})")
        return text

    return parse


_LOG_LEVELS = {
    "debug": LogLevel.debug,
    "info": LogLevel.info,
    "warn": LogLevel.warn,
    "error": LogLevel.error,
}


def parse_log_level(text: str) -> LogLevel:
    """``debug``, ``info``, ``warn`` or ``error``: the least severe level that is logged."""
    return _LOG_LEVELS[parse_choice(*_LOG_LEVELS)(text)]


def parse_log_file(text: str) -> str | None:
    """``-`` for standard error (``None``), otherwise a file path to append to."""
    if not text:
        raise ValueError("must not be empty (use - for standard error)")
    return None if text == "-" else text


def parse_optional_path(text: str) -> str | None:
    """A file path, or ``-`` for none (``None``)."""
    if not text:
        raise ValueError("must not be empty (use - for none)")
    return None if text == "-" else text


def parse_count(text: str) -> int:
    """A whole number, 0 or more (``20``)."""
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        raise ValueError(f"invalid number {text!r} (expected a whole number, 0 or more)")
    return int(text)


def parse_count_in(low: int, high: int) -> Callable[[str], int]:
    """A parser of whole numbers from ``low`` to ``high``."""

    def parse(text: str) -> int:
        n = parse_count(text)
        if not low <= n <= high:
            raise ValueError(f"invalid number {text!r} (expected {low} to {high})")
        return n

    return parse


def parse_number_in(low: float, high: float) -> Callable[[str], float]:
    """A parser of numbers from ``low`` to ``high`` (``0.5``; never nan or infinity)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"invalid number {text!r} (expected {low:g} to {high:g})") from None
        if not low <= value <= high:  # also refuses nan and inf
            raise ValueError(f"invalid number {text!r} (expected {low:g} to {high:g})")
        return value

    return parse


def parse_yes_no(text: str) -> bool:
    """``yes``/``true``/``on``/``1`` or ``no``/``false``/``off``/``0``."""
    lowered = text.lower()
    if lowered in ("yes", "true", "on", "1"):
        return True
    if lowered in ("no", "false", "off", "0"):
        return False
    raise ValueError(f"invalid switch {text!r} (expected yes or no)")


def parse_positive_count(text: str) -> int:
    """A whole number, 1 or more."""
    n = parse_count(text)
    if n < 1:
        raise ValueError(f"invalid number {text!r} (expected 1 or more)")
    return n


def parse_expires(text: str) -> int:
    """A SIP expiry in whole seconds, 1 to 2**32-1 (RFC 3261 §20.19)."""
    n = parse_count(text)
    if not 1 <= n <= 2**32 - 1:
        raise ValueError(f"invalid expiry {text!r} (expected 1 to 4294967295 seconds)")
    return n


def parse_days(text: str) -> float:
    """A positive number of days."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"invalid number of days {text!r} (expected a number > 0)") from None
    if not 0 < value < 100_000:
        raise ValueError(f"invalid number of days {text!r} (expected a number > 0)")
    return value


def parse_seconds_or_zero(text: str) -> float:
    """A duration in seconds, 0 or more (0 usually means "never"/"off")."""
    if text.strip() in ("0", "0.0"):
        return 0.0
    return parse_seconds(text)


def parse_optional_endpoint(text: str) -> str | None:
    """``-`` (none) or a stream server endpoint (see :func:`parse_stream_endpoint`)."""
    return None if text == "-" else parse_stream_endpoint(text)


def parse_bearer_token(text: str) -> str | None:
    """
    ``-`` (none) or a bearer token: at least 16 visible ASCII characters, no spaces (it is
    sent in an ``Authorization`` header). The text is not echoed in errors.
    """
    if text == "-":
        return None
    if len(text) < 16:
        raise ValueError("too short a token (use at least 16 characters, or - for none)")
    if not all("!" <= c <= "~" for c in text):
        raise ValueError("a token is visible ASCII characters only (no spaces)")
    return text


def parse_network_set(text: str) -> NetworkSet:
    """A comma-separated list of IP addresses and networks (``192.0.2.0/24``), or ``-``."""
    return NetworkSet.parse(text)


def parse_ipv6_prefix(text: str) -> int:
    """An IPv6 prefix length, 1 to 128."""
    value = parse_positive_count(text)
    if value > 128:
        raise ValueError(f"{value} is not an IPv6 prefix length (1-128)")
    return value


def parse_host_list(text: str) -> tuple[str, ...]:
    """A comma-separated list of host names or IP addresses, or ``-`` for none."""
    if text == "-":
        return ()
    return tuple(parse_sip_domain(item.strip()) for item in text.split(","))


DIGEST_ALGORITHMS = ("SHA-256", "MD5")


def parse_digest_algorithms(text: str) -> tuple[str, ...]:
    """A comma-separated, non-empty list of SHA-256 and MD5, each at most once, in order."""
    hint = "expected SHA-256, MD5 or both, comma-separated, in the order offered"
    names = [name.strip().upper() for name in text.split(",")]
    if names == [""]:
        raise ValueError(f"no algorithm given ({hint})")
    for i, name in enumerate(names):
        if name not in DIGEST_ALGORITHMS:
            raise ValueError(f"unknown digest algorithm {name!r} ({hint})")
        if name in names[:i]:
            raise ValueError(f"digest algorithm {name!r} listed twice")
    return tuple(names)


def parse_secret(text: str) -> bytes | None:
    """
    A shared secret of at least 16 characters, or ``random`` (``None``): draw one at start-up.
    The text is not echoed in errors.
    """
    if text == "random":
        return None
    if len(text) < 16:
        raise ValueError("too short a secret (use at least 16 characters, or random)")
    return text.encode("utf-8")


# --- the schema ------------------------------------------------------------------------------


@attrs.frozen
class SipConfig:
    """``[sip]``: the SIP listener and RFC 3261 protocol timers."""

    domain: str = attrs.field(
        metadata=setting(
            parse_sip_domain,
            None,
            "Required. The SIP domain users' addresses (AORs) are in: sip:alice@DOMAIN. A"
            " hostname or an IP address; phones register to it.",
        )
    )
    listen: HostPort = attrs.field(
        metadata=setting(
            parse_host_port,
            "127.0.0.1:5060",
            "Address and port the SIP transports listen on, host:port with an IP address"
            " (IPv6 as [::1]:5060; port 0 picks a free port).",
        )
    )
    transports: tuple[str, ...] = attrs.field(
        metadata=setting(
            parse_transports,
            "udp, tcp",
            "Comma-separated SIP transports to listen on: a subset of udp, tcp, tls.",
        )
    )
    t1: float = attrs.field(
        metadata=setting(
            parse_seconds,
            "0.5",
            "RFC 3261 timer T1 in seconds: round-trip time estimate; first retransmission"
            " interval.",
        )
    )
    t2: float = attrs.field(
        metadata=setting(
            parse_seconds,
            "4.0",
            "RFC 3261 timer T2 in seconds: the longest retransmission interval for non-INVITE"
            " requests and INVITE responses; at least t1.",
        )
    )
    t4: float = attrs.field(
        metadata=setting(
            parse_seconds,
            "5.0",
            "RFC 3261 timer T4 in seconds: the longest a message stays in the network.",
        )
    )
    user_agent: str = attrs.field(
        metadata=setting(
            parse_header_text,
            f"clicktodial/{__version__}",
            "Value of the User-Agent and Server headers we send.",
        )
    )
    udp_buffer: int = attrs.field(
        default=0,
        metadata=setting(
            parse_count,
            "0",
            "Receive and send buffer size of the UDP socket in bytes (SO_RCVBUF/SO_SNDBUF),"
            " to absorb bursts of REGISTERs; 0 keeps the system default. Linux caps it at"
            " net.core.rmem_max/wmem_max.",
        ),
    )

    tls_listen: HostPort = attrs.field(
        default=HostPort("127.0.0.1", 5061),
        metadata=setting(
            parse_host_port,
            "127.0.0.1:5061",
            "Address and port SIP over TLS listens on when transports lists tls (RFC 3261"
            " §26.2: 5061 for sips:).",
        ),
    )
    tls_certificate: str | None = attrs.field(
        default=None,
        metadata=setting(
            parse_optional_path,
            "-",
            "PEM file of the certificate (and its chain) SIP over TLS presents; required"
            " when transports lists tls. - for none.",
        ),
    )
    tls_private_key: str | None = attrs.field(
        default=None,
        metadata=setting(
            parse_optional_path,
            "-",
            "PEM file of the certificate's private key (may be the certificate file itself);"
            " required when transports lists tls. - for none.",
        ),
    )

    stream_idle_timeout: float = attrs.field(
        default=300.0,
        metadata=setting(
            parse_seconds,
            "300",
            "Seconds a TCP or TLS connection that carries no registration may stay silent"
            " before it is closed (a connection a phone registered over stays open while its"
            " binding lives: flow_keep_margin).",
        ),
    )
    flow_keep_margin: float = attrs.field(
        default=60.0,
        metadata=setting(
            parse_seconds_or_zero,
            "60",
            "Seconds past the expiry of the last binding registered over a TCP or TLS"
            " connection during which the connection is still kept open, silent or not"
            " (room for a late refresh).",
        ),
    )
    stream_close_timeout: float = attrs.field(
        default=5.0,
        metadata=setting(
            parse_seconds,
            "5",
            "Seconds a graceful close of a TCP or TLS connection (TLS close_notify) may take"
            " before the connection is aborted.",
        ),
    )
    max_connections_per_source: int = attrs.field(
        default=100,
        metadata=setting(
            parse_count,
            "100",
            "Most TCP (and, apart, TLS) connections one source address may hold open; one"
            " more is closed before anything is read from it (0: no limit). [registrar]"
            " trusted_proxies are exempt (a front proxy carries every phone's connections).",
        ),
    )
    flow_timer: int = attrs.field(
        default=120,
        metadata=setting(
            parse_positive_count,
            "120",
            "Flow-Timer (RFC 5626 §4.4.1) in the 200 to a REGISTER with reg-id over TCP or"
            " TLS: seconds within which the phone should send a CRLF keep-alive.",
        ),
    )

    def __attrs_post_init__(self) -> None:
        # RFC 3261 §17.1.2.2: intervals double from T1 up to T2, so T2 below T1 is meaningless.
        if self.t2 < self.t1:
            raise InvalidSetting("t2", f"{self.t2} is less than t1 ({self.t1})")
        if "tls" in self.transports:
            for key in ("tls_certificate", "tls_private_key"):
                if getattr(self, key) is None:
                    raise InvalidSetting(key, "required when transports lists tls")


@attrs.frozen
class WebConfig:
    """``[web]``: the web interface."""

    listen: str = attrs.field(
        metadata=setting(
            parse_stream_endpoint,
            "tcp:8080:interface=127.0.0.1",
            "Twisted endpoint the web interface listens on, e.g. tcp:8080:interface=127.0.0.1,"
            " tcp6:8080:interface=\\:\\:1, unix:/run/clicktodial/web.sock,"
            " systemd:domain=INET:index=0.",
        )
    )
    login_free_failures: int = attrs.field(
        default=5,
        metadata=setting(
            parse_count,
            "5",
            "Failed web logins per account and per client address answered without delay.",
        ),
    )
    login_base_delay: float = attrs.field(
        default=1.0,
        metadata=setting(
            parse_seconds_or_zero,
            "1",
            "Delay in seconds of the answer to the first failed login past"
            " login_free_failures; each further failure doubles it.",
        ),
    )
    login_max_delay: float = attrs.field(
        default=8.0,
        metadata=setting(
            parse_seconds_or_zero,
            "8",
            "Longest delay in seconds of the answer to a failed login.",
        ),
    )
    login_refuse_after: int = attrs.field(
        default=10,
        metadata=setting(
            parse_count,
            "10",
            "Failed logins after which the account or client address gets 429 for"
            " login_refuse_seconds; 0 never refuses.",
        ),
    )
    login_refuse_seconds: float = attrs.field(
        default=300.0,
        metadata=setting(
            parse_seconds_or_zero,
            "300",
            "How long a login refusal lasts, in seconds.",
        ),
    )
    login_forget_after: float = attrs.field(
        default=900.0,
        metadata=setting(
            parse_seconds,
            "900",
            "Seconds without a failed login after which an account's or address's count"
            " starts again.",
        ),
    )
    login_trust_seconds: float = attrs.field(
        default=604800.0,
        metadata=setting(
            parse_seconds,
            "604800",
            "How long an address that logged in as a user stays known for that user: its"
            " logins as that user are then limited by their own count only, not by the"
            " account's or address's (so others' failures cannot lock the user out there).",
        ),
    )
    login_max_tracked: int = attrs.field(
        default=100_000,
        metadata=setting(
            parse_positive_count,
            "100000",
            "Most accounts (and, separately, client addresses) whose failed logins are"
            " remembered; the least recently failed are forgotten first.",
        ),
    )
    session_idle_timeout: float = attrs.field(
        default=3600.0,
        metadata=setting(
            parse_seconds,
            "3600",
            "Seconds without a request after which a browser session ends (log in again).",
        ),
    )
    session_lifetime: float = attrs.field(
        default=43200.0,
        metadata=setting(
            parse_seconds,
            "43200",
            "Seconds after logging in after which a browser session ends however active;"
            " at least session_idle_timeout.",
        ),
    )
    max_sessions: int = attrs.field(
        default=100_000,
        metadata=setting(
            parse_positive_count,
            "100000",
            "Most browser sessions kept; past that the least recently used one ends.",
        ),
    )
    calls_per_minute: int = attrs.field(
        default=10,
        metadata=setting(
            parse_positive_count,
            "10",
            "Calls a user may place from the web or the API in any 60 s; more get 429 with"
            " Retry-After.",
        ),
    )
    max_batch_calls: int = attrs.field(
        default=1000,
        metadata=setting(
            parse_positive_count,
            "1000",
            'Most calls one administrator\'s POST /api/v1/calls with a "calls" list may'
            " place (load tests and operator tools); a longer list gets 400. The body must"
            " also fit max_body.",
        ),
    )
    event_streams_per_user: int = attrs.field(
        default=8,
        metadata=setting(
            parse_positive_count,
            "8",
            "Live event streams (GET /api/v1/events: one per open page) a user may hold at"
            " once; more get 429.",
        ),
    )
    event_keepalive: float = attrs.field(
        default=15.0,
        metadata=setting(
            parse_seconds,
            "15",
            "Seconds between two keepalive comments on an idle event stream (keep it under"
            " the idle timeout of any proxy in front).",
        ),
    )
    event_retry: float = attrs.field(
        default=3.0,
        metadata=setting(
            parse_seconds,
            "3",
            "Seconds a browser waits before reopening a closed event stream (the stream's"
            " retry: field).",
        ),
    )
    presence_poll_interval: float = attrs.field(
        default=2.0,
        metadata=setting(
            parse_seconds,
            "2",
            "Seconds between two reads of every registration while an event stream is open:"
            " how soon expiries and registrations handled by another daemon sharing the"
            " database show (this daemon's own REGISTERs show at once).",
        ),
    )
    max_body: int = attrs.field(
        default=65536,
        metadata=setting(
            parse_positive_count,
            "65536",
            "Largest request body accepted (a form or JSON), in bytes; larger get 413."
            " At least 1024.",
        ),
    )
    max_connections_per_client: int = attrs.field(
        default=256,
        metadata=setting(
            parse_count,
            "256",
            "Most connections one client address may hold open to listen; one more is"
            " closed before anything is read from it (0: no limit). trusted_proxies are"
            " exempt.",
        ),
    )
    request_timeout: float = attrs.field(
        default=30.0,
        metadata=setting(
            parse_seconds,
            "30",
            "Seconds a request may take to arrive whole (request line, headers and body),"
            " counted from the connection's start or from the previous response; a slower"
            " client is disconnected. An idle keep-alive connection is closed after it too.",
        ),
    )
    metrics_listen: str | None = attrs.field(
        default=None,
        metadata=setting(
            parse_optional_endpoint,
            "-",
            "Twisted endpoint of a second listener serving only /metrics, /readyz and"
            " /healthz to anyone who can reach it (e.g. tcp:8081:interface=127.0.0.1),"
            " or - for none.",
        ),
    )
    metrics_token: str | None = attrs.field(
        default=None,
        repr=False,
        metadata=setting(
            parse_bearer_token,
            "-",
            "Bearer token (at least 16 characters) that opens /metrics and /readyz on the"
            " listen endpoint, or - for none; administrators' sessions and API tokens open"
            " them too, anyone else gets 401/403.",
        ),
    )
    trusted_proxies: NetworkSet = attrs.field(
        default=NetworkSet(),
        metadata=setting(
            parse_network_set,
            "-",
            "Comma-separated IP addresses or networks of the reverse proxies in front of the"
            " web interface, or - for none: only from them are X-Forwarded-For (the client"
            " address) and X-Forwarded-Proto (https) believed.",
        ),
    )
    secure_cookies: str = attrs.field(
        default="auto",
        metadata=setting(
            parse_choice("auto", "always"),
            "auto",
            "auto marks cookies Secure when the request came over TLS, or from a trusted"
            " proxy saying X-Forwarded-Proto: https; always marks them Secure whatever the"
            " request (behind a proxy that terminates TLS and says nothing).",
        ),
    )
    hsts_max_age: int = attrs.field(
        default=31536000,
        metadata=setting(
            parse_count,
            "31536000",
            "max-age (seconds) of the Strict-Transport-Security header sent with every"
            " answer to a request that came over TLS (or from a trusted proxy saying https);"
            " 0 sends none.",
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.login_max_delay < self.login_base_delay:
            raise InvalidSetting(
                "login_max_delay",
                f"{self.login_max_delay} is less than login_base_delay ({self.login_base_delay})",
            )
        if self.session_lifetime < self.session_idle_timeout:
            raise InvalidSetting(
                "session_lifetime",
                f"{self.session_lifetime} is less than session_idle_timeout"
                f" ({self.session_idle_timeout})",
            )
        if self.max_body < 1024:
            raise InvalidSetting("max_body", f"{self.max_body} is less than 1024 bytes")
        if self.metrics_listen is not None and self.metrics_listen == self.listen:
            raise InvalidSetting("metrics_listen", "is the same endpoint as listen")


@attrs.frozen
class StoreConfig:
    """``[store]``: where users, registrations and call records are kept."""

    backend: str = attrs.field(
        metadata=setting(
            parse_plugin_name,
            "sql",
            "Name of the storage backend plugin (users, call records and, unless"
            " [location] names another, registrations): sql (the built-in SQLAlchemy"
            " backend), memory (nothing survives a restart) or an installed plugin's name."
            " Its options: the [store:NAME] section.",
        )
    )
    url: URL = attrs.field(
        metadata=setting(
            parse_database_url,
            "sqlite:///var/clicktodial.sqlite",
            "SQLAlchemy database URL for the sql backend (the same as [store:sql] url; give"
            " one of the two). A relative SQLite path"
            " (sqlite:///var/x.sqlite) is relative to the daemon's current working directory;"
            " an absolute one has four slashes (sqlite:////var/lib/clicktodial/x.sqlite)."
            " PostgreSQL: postgresql+psycopg://USER@HOST/DBNAME, or"
            " postgresql+psycopg://USER@/DBNAME for the local unix socket.",
        )
    )
    auto_upgrade: bool = attrs.field(
        default=False,
        metadata=setting(
            parse_yes_no,
            "no",
            "yes: create or migrate the database schema when the daemon starts (for"
            " development). no: refuse to start on an out-of-date schema; run"
            " clicktodial --config FILE db upgrade. The sql backend's; also [store:sql]"
            " auto_upgrade.",
        ),
    )
    demo_users: bool = attrs.field(
        default=False,
        metadata=setting(
            parse_yes_no,
            "no",
            "yes: create the demo users alice and bob (web and SIP password = username) at"
            " start-up if they do not exist. For development only.",
        ),
    )


def parse_optional_plugin_name(text: str) -> str:
    """A plugin name, or empty."""
    return parse_plugin_name(text) if text else ""


@attrs.frozen
class LocationConfig:
    """``[location]``: where registrations (bindings) are kept."""

    backend: str = attrs.field(
        default="",
        metadata=setting(
            parse_optional_plugin_name,
            "",
            "Name of the location backend plugin keeping registrations: empty (the [store]"
            " backend keeps them), memory, sql, or an installed plugin's name (e.g. redis"
            " from clicktodial-redis). Its options: the [location:NAME] section; a backend"
            " named here is a store of its own, even if it is the [store] backend's name.",
        ),
    )


#: The kinds of ``[KIND:NAME]`` section: plugins (clicktodial.plugins), and ``[trunk:NAME]``
#: SIP trunks to a provider (clicktodial.trunks.config validates those).
PLUGIN_KINDS = ("store", "location", "policy", "trunk")


def _read_only_sections(
    sections: Mapping[str, Mapping[str, str]],
) -> Mapping[str, Mapping[str, str]]:
    return types.MappingProxyType(
        {name: types.MappingProxyType(dict(keys)) for name, keys in sections.items()}
    )


@attrs.frozen
class PluginSections:
    """
    The ``[KIND:NAME]`` sections (``[store:sql]``, ``[location:redis]``, ``[policy:vip]``):
    each plugin's options as the INI file gives them, stripped strings. The daemon checks
    only their shape; the plugin validates its keys at start-up (and ``check-config``).

    :ivar sections: ``{"KIND:NAME": {key: value}}``.
    """

    # Read-only copies; left out of the hash (a Config stays hashable), not out of equality.
    sections: Mapping[str, Mapping[str, str]] = attrs.field(
        factory=dict, converter=_read_only_sections, hash=False
    )

    def options(self, kind: str, name: str) -> dict[str, str]:
        """The options of ``[KIND:NAME]`` (empty if the file has no such section)."""
        return dict(self.sections.get(f"{kind}:{name}", {}))

    def given(self, kind: str, name: str) -> bool:
        """Whether the file has the section ``[KIND:NAME]``."""
        return f"{kind}:{name}" in self.sections

    def names(self, kind: str) -> list[str]:
        """The names of the ``[KIND:NAME]`` sections of ``kind``, in file order."""
        prefix = f"{kind}:"
        return [s[len(prefix) :] for s in self.sections if s.startswith(prefix)]


@attrs.frozen
class LogConfig:
    """``[log]``: what is logged, how and where."""

    level: LogLevel = attrs.field(
        metadata=setting(
            parse_log_level,
            "info",
            "Least severe level logged: debug, info, warn or error.",
        )
    )
    format: str = attrs.field(
        metadata=setting(
            parse_choice("text", "json"),
            "text",
            "text: one readable line per event; json: one JSON object per line (Twisted's"
            " jsonFileLogObserver format, with the named fields such as call_id and aor).",
        )
    )
    file: str | None = attrs.field(
        metadata=setting(
            parse_log_file,
            "-",
            "Where the log goes: - for standard error, or a file path to append to. It"
            " replaces twistd's --logfile and --syslog.",
        )
    )


@attrs.frozen
class RegistrarConfig:
    """``[registrar]``: REGISTER handling (RFC 3261 §10.3), Digest nonces, failure throttling."""

    default_expires: int = attrs.field(
        metadata=setting(
            parse_expires,
            "3600",
            "Seconds a registration lasts when the phone names no expiry.",
        )
    )
    min_expires: int = attrs.field(
        metadata=setting(
            parse_count,
            "60",
            "Shortest registration accepted, in seconds: shorter (non-zero) requests get"
            " 423 Interval Too Brief. At most default_expires.",
        )
    )
    max_expires: int = attrs.field(
        metadata=setting(
            parse_expires,
            "86400",
            "Longest registration granted, in seconds: longer requests are shortened to it."
            " At least default_expires.",
        )
    )
    aliases: tuple[str, ...] = attrs.field(
        metadata=setting(
            parse_host_list,
            "-",
            "Comma-separated other host names or IP addresses that name the [sip] domain in a"
            " Request-URI or To (e.g. the server's address), or - for none; AORs written with"
            " them are the domain's AORs.",
        )
    )
    purge_interval: float = attrs.field(
        metadata=setting(
            parse_seconds_or_zero,
            "60",
            "Seconds between purges of expired registrations from the store (0: never;"
            " expired ones are ignored anyway).",
        )
    )
    nonce_lifetime: float = attrs.field(
        metadata=setting(
            parse_seconds,
            "300",
            "Seconds a Digest nonce stays fresh; after that the phone is re-challenged with"
            " stale=true.",
        )
    )
    nonce_secret: bytes | None = attrs.field(
        repr=False,
        metadata=setting(
            parse_secret,
            "random",
            "Key of the stateless Digest nonces, at least 16 characters. Daemons sharing a"
            " domain and a database must share it; random draws one at start-up (nonces"
            " then do not survive a restart: phones are simply challenged again).",
        ),
    )
    digest_algorithms: tuple[str, ...] = attrs.field(
        metadata=setting(
            parse_digest_algorithms,
            "SHA-256, MD5",
            "The Digest challenges of a 401, in order (RFC 8760: the strongest first). Some"
            " clients answer only the first challenge and know only MD5 (SIPp 3.6 does):"
            " for them, put MD5 first or alone.",
        )
    )
    credentials_cache_seconds: float = attrs.field(
        metadata=setting(
            parse_seconds_or_zero,
            "60",
            "Seconds a user's Digest secrets (HA1), once read from the store, are used"
            " from memory (0: read them for every authenticated REGISTER). Changes made"
            " through this daemon apply at once, and a new password always works at once;"
            " a password changed, or a user disabled or removed, through another daemon"
            " sharing the database or the CLI stops the old password within this time.",
        )
    )
    max_delayed: int = attrs.field(
        metadata=setting(
            parse_count,
            "1000",
            "Most answers to failed authentications held back at once; past that, failures"
            " are refused at once with 503.",
        )
    )
    auth_free_failures: int = attrs.field(
        metadata=setting(
            parse_count,
            "3",
            "Authentication failures per source address and per username answered without delay.",
        )
    )
    auth_base_delay: float = attrs.field(
        metadata=setting(
            parse_seconds_or_zero,
            "0.5",
            "Delay in seconds of the answer to the first failure past auth_free_failures;"
            " each further failure doubles it.",
        )
    )
    auth_max_delay: float = attrs.field(
        metadata=setting(
            parse_seconds_or_zero,
            "8",
            "Longest delay in seconds (keep it well under a phone's 32 s transaction timeout).",
        )
    )
    auth_refuse_after: int = attrs.field(
        metadata=setting(
            parse_count,
            "20",
            "Failures after which the source address or username is refused (503 with"
            " Retry-After) for auth_refuse_seconds; 0 never refuses.",
        )
    )
    auth_refuse_seconds: float = attrs.field(
        metadata=setting(
            parse_seconds_or_zero,
            "300",
            "How long a refusal lasts, in seconds.",
        )
    )
    auth_forget_after: float = attrs.field(
        metadata=setting(
            parse_seconds,
            "900",
            "Seconds without failure after which a source's or username's count starts again.",
        )
    )
    auth_trust_seconds: float = attrs.field(
        metadata=setting(
            parse_seconds,
            "86400",
            "How long a source address that authenticated as a user stays known for that"
            " user (keep it above the phones' registration interval): its attempts as that"
            " user are then limited by their own count only, not by the source's or"
            " username's (so others' failures cannot lock the phone out).",
        )
    )
    trusted_proxies: NetworkSet = attrs.field(
        metadata=setting(
            parse_network_set,
            "-",
            "Comma-separated IP addresses or networks (192.0.2.0/24) of the SIP proxies in"
            " front of the daemon (an edge proxy such as the Kamailio of docs/scaling.md),"
            " or - for none. Only REGISTERs arriving from them may set a binding's Path"
            " (with path = trusted), and only their record of the phone's address is"
            " believed (docs/security.md).",
        )
    )
    path: str = attrs.field(
        metadata=setting(
            parse_choice("off", "trusted"),
            "off",
            "RFC 3327 Path in REGISTER: off ignores every Path (a binding routes to the"
            " address its REGISTER came from); trusted stores the Path of REGISTERs from"
            " trusted_proxies only and ignores any other.",
        )
    )
    max_contacts: int = attrs.field(
        metadata=setting(
            parse_positive_count,
            "5",
            "Most bindings (registered contacts) an address of record may have. A REGISTER"
            " that would add one beyond it, or that lists more Contacts, is refused with"
            ' 503 and nothing of it is applied (docs/registrar.md, "Binding trust").',
        )
    )
    auth_max_tracked: int = attrs.field(
        metadata=setting(
            parse_positive_count,
            "100000",
            "Most source addresses (and, separately, usernames) whose failures are"
            " remembered; the least recently failed are forgotten first.",
        )
    )
    nat_keepalive_interval: float = attrs.field(
        default=0.0,
        metadata=setting(
            parse_seconds_or_zero,
            "0",
            "Seconds between two OPTIONS pings to each UDP binding registered from behind NAT"
            " (its Contact host is not the REGISTER's source), sent to that source to keep"
            " the NAT's mapping open, as Kamailio's nathelper does; below the NATs' UDP"
            " timeout (often 30-120 s), e.g. 20. 0: no pings (docs/registrar.md).",
        ),
    )
    nat_keepalive_failures: int = attrs.field(
        default=3,
        metadata=setting(
            parse_positive_count,
            "3",
            "Pings in a row a phone behind NAT may leave unanswered before its binding is"
            " removed (shown offline, not rung) until it registers again.",
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.min_expires > self.default_expires:
            raise InvalidSetting(
                "min_expires",
                f"{self.min_expires} is more than default_expires ({self.default_expires})",
            )
        if self.max_expires < self.default_expires:
            raise InvalidSetting(
                "max_expires",
                f"{self.max_expires} is less than default_expires ({self.default_expires})",
            )


@attrs.frozen
class CallsConfig:
    """``[calls]``: click-to-dial calls (RFC 3725 third-party call control)."""

    policy: str = attrs.field(
        default="flow4",
        metadata=setting(
            parse_plugin_name,
            "flow4",
            "Name of the call-control policy plugin: flow4 (RFC 3725 Flow IV: the caller's"
            " 2xx is ACKed at once with a held answer, then the caller is re-INVITEd with"
            " the callee's offer) or flow1 (Flow I: the caller's offer goes to the callee;"
            " the callee must answer within the caller's 32 s 2xx retransmission window),"
            " or an installed plugin's name. Its options: the [policy:NAME] section.",
        ),
    )
    ring_timeout: float = attrs.field(
        default=30.0,
        metadata=setting(
            parse_seconds,
            "30",
            "Seconds the caller's phones ring before the call is given up (CANCEL).",
        ),
    )
    callee_ring_timeout: float = attrs.field(
        default=60.0,
        metadata=setting(
            parse_seconds,
            "60",
            "Seconds the callee's phones ring before the call is given up (CANCEL to the"
            " callee, BYE to the caller).",
        ),
    )
    max_duration: float = attrs.field(
        default=14400.0,
        metadata=setting(
            parse_seconds_or_zero,
            "14400",
            "Longest a connected call may last, in seconds (0: no limit); then both"
            " phones get BYE.",
        ),
    )
    max_calls_per_user: int = attrs.field(
        default=4,
        metadata=setting(
            parse_count,
            "4",
            "Most calls in progress a user may take part in (as caller or callee) at once;"
            " 0: no limit.",
        ),
    )
    max_calls_total: int = attrs.field(
        default=0,
        metadata=setting(
            parse_count,
            "0",
            "Most calls in progress on this daemon at once; 0: no limit.",
        ),
    )
    max_forks: int = attrs.field(
        default=5,
        metadata=setting(
            parse_positive_count,
            "5",
            "Most INVITEs one call sends in parallel to one user's phones (bindings, the"
            " highest q first, then the most recently registered); the others are not rung.",
        ),
    )
    who_may_call: str = attrs.field(
        default="anyone",
        metadata=setting(
            parse_choice("anyone", "admins", "nobody"),
            "anyone",
            "Who may place calls: anyone (every enabled user), admins (only"
            " administrators), nobody (calls are switched off).",
        ),
    )
    lookup_cache_seconds: float = attrs.field(
        default=2.0,
        metadata=setting(
            parse_seconds_or_zero,
            "2",
            "Seconds users and bindings looked up to place a call are kept in memory"
            " (0: no cache). Registrations this daemon handles take effect at once; a"
            " REGISTER handled by another daemon, or a user disabled, is seen within this"
            " time.",
        ),
    )

    ringback: str = attrs.field(
        default="none",
        metadata=setting(
            parse_ringback,
            "none",
            "What the caller hears while the callee rings (RFC 3725 Flow IV only: the"
            " daemon answers the caller with its own RTP stream, [media]): none (silence,"
            " the caller's leg held), us, uk or eu ringback tone, or file:PATH of an"
            " 8000 Hz mono 16-bit WAV file, looped. See docs/media.md.",
        ),
    )
    tones: str = attrs.field(
        default="us",
        metadata=setting(
            parse_choice("us", "uk", "eu"),
            "us",
            "Region of the busy and failure (congestion) tones played to the caller when"
            " the call cannot be made: us, uk or eu.",
        ),
    )
    failure_tone_seconds: float = attrs.field(
        default=3.0,
        metadata=setting(
            parse_seconds_or_zero,
            "3",
            "Seconds the caller hears the busy or failure tone before the BYE, when ringback"
            " is on (0: hang up at once).",
        ),
    )
    trace: str = attrs.field(
        default="auto",
        metadata=setting(
            parse_choice("auto", "on", "off"),
            "auto",
            "Keep each call's SIP messages (its ladder on the call page, GET"
            ' /api/v1/calls/ID/trace; docs/calls.md, "Call traces"): auto (on when the'
            " [store] backend keeps traces, as memory and sql do), on (start-up fails if"
            " the backend cannot keep them) or off.",
        ),
    )
    trace_max_messages: int = attrs.field(
        default=200,
        metadata=setting(
            parse_positive_count,
            "200",
            "Most SIP messages kept per call; later ones are counted as dropped.",
        ),
    )
    trace_max_kb: int = attrs.field(
        default=128,
        metadata=setting(
            parse_positive_count,
            "128",
            "Most kilobytes (1024 bytes) of SIP messages kept per call; later messages are"
            " counted as dropped.",
        ),
    )
    trace_days: float = attrs.field(
        default=7.0,
        metadata=setting(
            parse_days,
            "7",
            "Days a call's trace is kept, then purged (checked hourly).",
        ),
    )


def parse_node_id(text: str) -> str:
    """A node's name: printable ASCII without spaces, at most 255 characters; empty: default."""
    if len(text) > 255 or not all(0x21 <= ord(c) < 0x7F for c in text):
        raise ValueError(
            f"invalid node id {text!r} (printable ASCII without spaces, at most 255 characters)"
        )
    return text


@attrs.frozen
class ClusterConfig:
    """``[cluster]``: several daemons sharing one PostgreSQL database (docs/scaling.md)."""

    bus: str = attrs.field(
        default="memory",
        metadata=setting(
            parse_choice("memory", "postgres"),
            "memory",
            "How call events and hang-up requests reach the other daemons: memory (a single"
            " daemon) or postgres (LISTEN/NOTIFY on the [store] PostgreSQL database; every"
            " daemon sharing the database then shows and controls every call, and ends the"
            " calls of a daemon that stopped heartbeating as lost).",
        ),
    )
    node_id: str = attrs.field(
        default="",
        metadata=setting(
            parse_node_id,
            "",
            "This daemon's name in call records, bus messages and the nodes table; unique"
            " among the daemons sharing a database. Empty: HOSTNAME:SIP-PORT.",
        ),
    )
    heartbeat_interval: float = attrs.field(
        default=2.0,
        metadata=setting(
            parse_seconds,
            "2",
            "Seconds between this daemon's heartbeats (with bus = postgres).",
        ),
    )
    dead_after: float = attrs.field(
        default=10.0,
        metadata=setting(
            parse_seconds,
            "10",
            "Seconds without a heartbeat after which another daemon is taken for dead and"
            " its calls in progress are recorded as ended (reason lost). Several times"
            " heartbeat_interval; the daemons' clocks must agree much better than this.",
        ),
    )

    def __attrs_post_init__(self) -> None:
        if self.dead_after < 2 * self.heartbeat_interval:
            raise InvalidSetting(
                "dead_after",
                f"{self.dead_after} is less than twice heartbeat_interval"
                f" ({self.heartbeat_interval})",
            )


@attrs.frozen
class MediaConfig:
    """``[media]``: the daemon's own RTP streams (ringback and tones, docs/media.md)."""

    address: str = attrs.field(
        default="127.0.0.1",
        metadata=setting(
            parse_unicast_address,
            "127.0.0.1",
            "IP address the RTP streams are sent from and that our SDP names: one the"
            " phones can reach (not 0.0.0.0).",
        ),
    )
    rtp_ports: tuple[int, int] = attrs.field(
        default=(20000, 20999),
        metadata=setting(
            parse_port_range,
            "20000-20999",
            "UDP ports of the RTP streams, LOW-HIGH; one even port a call while it plays a tone.",
        ),
    )
    direction: str = attrs.field(
        default="sendrecv",
        metadata=setting(
            parse_choice("sendrecv", "sendonly"),
            "sendrecv",
            "Direction attribute of our answer to the caller (RFC 3264 §6.1): sendrecv"
            " (the phone may send too, and we drop it) or sendonly (we only send). Phones"
            " treat a sendonly answer like being put on hold (RFC 3264 §8.4); baresip 1.x"
            " then plays nothing, see docs/media.md.",
        ),
    )
    relay: str = attrs.field(
        default="off",
        metadata=setting(
            parse_choice("off", "rtpengine", "auto"),
            "off",
            'Media relay between the two phones of a call (docs/media.md, "Media relay"):'
            " off (the phones send RTP to each other's SDP address), rtpengine (every call"
            " through the rtpengine of [media:rtpengine]) or auto (a call through rtpengine"
            " only when a phone's SDP address differs from its signalling source address, or"
            " is private while the other phone's is not: phones behind NAT).",
        ),
    )


def parse_ng_servers(text: str) -> tuple[HostPort, ...]:
    """A comma-separated, non-empty list of ``IP:PORT`` (rtpengine ``ng`` addresses)."""
    servers = tuple(parse_host_port(item.strip()) for item in text.split(","))
    if any(server.port == 0 for server in servers):
        raise ValueError(f"invalid ng address in {text!r} (port 0)")
    return servers


def parse_relay_interfaces(text: str) -> tuple[str, ...]:
    """``-`` or two rtpengine interface names, ``CALLER_SIDE, CALLEE_SIDE``."""
    if text == "-":
        return ()
    names = tuple(name.strip() for name in text.split(","))
    if len(names) != 2 or not all(re.fullmatch(r"[A-Za-z0-9_.-]+", name) for name in names):
        raise ValueError(f"invalid interfaces {text!r} (expected - or two names: caller, callee)")
    return names


@attrs.frozen
class RtpEngineConfig:
    """``[media:rtpengine]``: the rtpengine a relayed call goes through (docs/media.md)."""

    ng: tuple[HostPort, ...] = attrs.field(
        default=(HostPort("127.0.0.1", 22222),),
        metadata=setting(
            parse_ng_servers,
            "127.0.0.1:22222",
            "rtpengine's ng control address (its --listen-ng), IP:PORT; several,"
            " comma-separated, are tried in order when one does not answer (a call stays"
            " on the one that took its first offer).",
        ),
    )
    timeout: float = attrs.field(
        default=1.5,
        metadata=setting(
            parse_seconds,
            "1.5",
            "Seconds one ng server has to answer a command before the next is tried.",
        ),
    )
    retries: int = attrs.field(
        default=3,
        metadata=setting(
            parse_count,
            "3",
            "Retransmissions of a command to one server within timeout, each gap twice the"
            " one before (rtpengine answers a retransmission without doing it twice).",
        ),
    )
    interfaces: tuple[str, ...] = attrs.field(
        default=(),
        metadata=setting(
            parse_relay_interfaces,
            "-",
            "- (rtpengine's one interface) or two of its --interface names, CALLER, CALLEE:"
            " the side each phone is on (the ng 'direction'), e.g. public, private.",
        ),
    )
    on_failure: str = attrs.field(
        default="fail",
        metadata=setting(
            parse_choice("fail", "unrelayed"),
            "fail",
            "When rtpengine refuses or does not answer an offer or answer: fail (the call"
            " fails with reason media-relay-failed) or unrelayed (it goes on with the"
            " phones' own SDP, as with relay = off).",
        ),
    )


@attrs.frozen
class DaemonConfig:
    """``[daemon]``: how the daemon stops (docs/deploy.md)."""

    shutdown_grace: float = attrs.field(
        default=30.0,
        metadata=setting(
            parse_seconds_or_zero,
            "30",
            "On SIGTERM, seconds calls in progress may go on to their end while new calls and"
            " registrations get 503 with Retry-After; then the calls left get BYE and the"
            " daemon exits. 0: end them at once.",
        ),
    )
    workers: int = attrs.field(
        default=1,
        metadata=setting(
            parse_workers,
            "1",
            'SIP worker processes (docs/deploy.md, "Worker processes"): 1 runs everything in'
            " one process; N > 1 runs N workers sharing the [sip] listen ports (SO_REUSEPORT),"
            " with the web interface in the main process; auto: one per core.",
        ),
    )
    worker_ports: int = attrs.field(
        default=0,
        metadata=setting(
            parse_port,
            "0",
            "With workers > 1: each worker's private SIP port (its Via sent-by and Contact,"
            " where responses and in-dialog requests come back) is this port + the worker's"
            " index (0, 1, ...); 0: ports the system picks.",
        ),
    )


@attrs.frozen
class LimitsConfig:
    """``[limits]``: protection under load (docs/deploy.md, "Protection under load")."""

    rate_window: float = attrs.field(
        default=2.0,
        metadata=setting(
            parse_seconds,
            "2",
            "Length in seconds of the sliding window in which requests are counted per"
            " source IP address (like Kamailio's pike sampling_time_unit).",
        ),
    )
    rate_max_requests: int = attrs.field(
        default=200,
        metadata=setting(
            parse_count,
            "200",
            "Most datagrams (requests, responses, garbage), TCP connections and TCP"
            " messages one source IP address may send in rate_window, counted before"
            " parsing; past that it is banned (what it sends is dropped unanswered, by a"
            " kernel socket filter where the system has one) for rate_ban_seconds."
            " 0: no limit.",
        ),
    )
    rate_ban_seconds: float = attrs.field(
        default=60.0,
        metadata=setting(
            parse_seconds,
            "60",
            "How long a source IP address that went over rate_max_requests is banned.",
        ),
    )
    rate_exempt: NetworkSet = attrs.field(
        default=NetworkSet(),
        metadata=setting(
            parse_network_set,
            "-",
            "Comma-separated IP addresses or networks never rate-limited (a trusted SIP"
            " proxy or SBC in front of the daemon), or - for none. [registrar]"
            " trusted_proxies are never rate-limited either.",
        ),
    )
    rate_ipv6_prefix: int = attrs.field(
        default=64,
        metadata=setting(
            parse_ipv6_prefix,
            "64",
            "IPv6 sources are counted per network of this prefix length (1-128): 64 counts"
            " a whole /64 (one host or site usually holds one, and can use any address in"
            " it) as one source; 128 counts each address.",
        ),
    )
    max_transactions: int = attrs.field(
        default=5000,
        metadata=setting(
            parse_count,
            "5000",
            "Overload bound: while this many SIP transactions are doing work (waiting for"
            " the daemon's answer or a peer's, retransmitting a request), new requests"
            " outside a dialog (except OPTIONS) get 503 with Retry-After. Finished"
            " transactions waiting out Timer J/K (32 s) for retransmissions do not count."
            " 0: no bound.",
        ),
    )
    max_store_pending: int = attrs.field(
        default=500,
        metadata=setting(
            parse_count,
            "500",
            "Overload bound: while this many database operations wait for a database"
            " thread, new REGISTERs and INVITEs get 503 with Retry-After. 0: no bound.",
        ),
    )
    retry_after: int = attrs.field(
        default=5,
        metadata=setting(
            parse_positive_count,
            "5",
            "Seconds in the Retry-After of the 503s sent while overloaded or stopping.",
        ),
    )


# --- [dialplan] (docs/dialplan.md) -----------------------------------------------------------


def parse_country_code(text: str) -> str:
    """An E.164 country code (``44``), or empty: no dial plan, numbers cannot be called."""
    if text and not re.fullmatch(r"[1-9][0-9]{0,2}", text):
        raise ValueError(f"invalid country code {text!r} (expected 1 to 3 digits, e.g. 44)")
    return text


def parse_dial_prefix(text: str) -> str:
    """Digits dialled before a number (``0``, ``00``), or empty."""
    if text and not re.fullmatch(r"[0-9]{1,4}", text):
        raise ValueError(f"invalid prefix {text!r} (expected up to 4 digits)")
    return text


def parse_prefix_list(text: str) -> frozenset[str] | None:
    """
    E.164 prefixes, ``+`` optional (``+447 +4470``): ``country`` for the built-in table of
    the country code, ``none`` for no prefix at all.
    """
    if text == "country":
        return None
    if text == "none":
        return frozenset()
    prefixes = set()
    for word in text.replace(",", " ").split():
        if not re.fullmatch(r"\+?[1-9][0-9]{0,14}", word):
            raise ValueError(
                f"invalid prefix {word!r} (expected E.164 digits such as +447, or country or none)"
            )
        prefixes.add(word.lstrip("+"))
    return frozenset(prefixes)


def parse_short_numbers(text: str) -> frozenset[str] | None:
    """Short numbers as dialled (``999 112``), ``country`` or ``none``."""
    if text in ("country", "none"):
        return None if text == "country" else frozenset()
    words = text.replace(",", " ").split()
    for word in words:
        if not re.fullmatch(r"[0-9]{2,6}", word):
            raise ValueError(f"invalid short number {word!r} (expected 2 to 6 digits)")
    return frozenset(words)


def parse_dial_classes(text: str) -> frozenset[str]:
    """Destination classes a user may dial (``national, mobile``), or ``none``."""
    if text == "none":
        return frozenset()
    classes = frozenset(text.replace(",", " ").split())
    for name in sorted(classes):
        if name not in ALLOWABLE_CLASSES:
            hint = (
                " (emergency numbers are always refused: docs/dialplan.md)"
                if name == "emergency"
                else ""
            )
            raise ValueError(
                f"unknown class {name!r} (expected some of"
                f" {', '.join(ALLOWABLE_CLASSES)}, or none){hint}"
            )
    return classes


def parse_user_classes(text: str) -> Mapping[str, frozenset[str]]:
    """One user a line: ``alice national mobile international`` (``alice none``: nothing)."""
    users: dict[str, frozenset[str]] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, classes = line.strip().partition(" ")
        if not is_valid_username(name):
            raise ValueError(f"invalid user name {name!r} in line {line.strip()!r}")
        if name in users:
            raise ValueError(f"user {name!r} is given twice")
        if not classes.strip():
            raise ValueError(f"line {line.strip()!r} names no class (or none)")
        users[name] = parse_dial_classes(classes.strip())
    return types.MappingProxyType(users)


def parse_routes(text: str) -> tuple[Route, ...]:
    """One route a line, first match wins: ``+447 mobile backup`` (``+`` alone: all)."""
    routes = []
    for line in text.splitlines():
        words = line.replace(",", " ").split()
        if not words:
            continue
        prefix, *trunks = words
        if not re.fullmatch(r"\+[0-9]{0,15}", prefix):
            raise ValueError(
                f"invalid route prefix {prefix!r} in line {line.strip()!r}"
                " (expected + and E.164 digits, e.g. +44)"
            )
        if not trunks:
            raise ValueError(f"route {line.strip()!r} names no trunk")
        for trunk in trunks:
            parse_plugin_name(trunk)
        routes.append(Route(prefix[1:], tuple(trunks)))
    return tuple(routes)


def _tables_of(given: frozenset[str] | None, default: frozenset[str]) -> frozenset[str]:
    return default if given is None else given


@attrs.frozen
class DialplanConfig:
    """``[dialplan]``: calling numbers through trunks (docs/dialplan.md)."""

    country_code: str = attrs.field(
        default="",
        metadata=setting(
            parse_country_code,
            "",
            "The E.164 country code numbers are read by (44). Empty: no dial plan, only"
            " directory users can be called.",
        ),
    )
    national_prefix: str = attrs.field(
        default="0",
        metadata=setting(
            parse_dial_prefix,
            "0",
            "What is dialled before a national number (0 in the UK); empty where none is.",
        ),
    )
    international_prefix: str = attrs.field(
        default="00",
        metadata=setting(
            parse_dial_prefix,
            "00",
            "What is dialled before a country code instead of + (00; 011 in North America).",
        ),
    )
    mobile_prefixes: frozenset[str] | None = attrs.field(
        default=None,
        metadata=setting(
            parse_prefix_list,
            "country",
            "E.164 prefixes of mobile numbers (+447); country: the built-in table of the"
            " country code; none: no mobile class.",
        ),
    )
    premium_prefixes: frozenset[str] | None = attrs.field(
        default=None,
        metadata=setting(
            parse_prefix_list,
            "country",
            "E.164 prefixes of premium-rate and special numbers (+449 +4487); country or none.",
        ),
    )
    abroad_prefixes: frozenset[str] | None = attrs.field(
        default=None,
        metadata=setting(
            parse_prefix_list,
            "country",
            "E.164 prefixes inside the country code that are other countries (the Caribbean"
            " in +1): international; country or none.",
        ),
    )
    emergency_numbers: frozenset[str] | None = attrs.field(
        default=None,
        metadata=setting(
            parse_short_numbers,
            "country",
            "Emergency numbers as dialled (999 112): always refused; country or none.",
        ),
    )
    allowed_classes: frozenset[str] = attrs.field(
        default=DEFAULT_ALLOWED,
        metadata=setting(
            parse_dial_classes,
            "national, mobile",
            "The classes users may dial: some of national, mobile, international, premium.",
        ),
    )
    user_classes: Mapping[str, frozenset[str]] = attrs.field(
        factory=dict,
        hash=False,
        metadata=setting(
            parse_user_classes,
            "",
            "Users who may dial other classes than allowed_classes: one a line, the user"
            " name then the classes (alice national mobile international).",
        ),
    )
    routes: tuple[Route, ...] = attrs.field(
        default=(),
        metadata=setting(
            parse_routes,
            "",
            "One route a line, the first whose prefix matches wins: the E.164 prefix (+ alone"
            " matches all) then the trunks to try in order (+44 uk_main uk_backup).",
        ),
    )
    daily_limit: int = attrs.field(
        default=100,
        metadata=setting(
            parse_count,
            "100",
            "Outbound calls a user may place a day (UTC days, counted in the store across"
            " daemons); 0: no limit.",
        ),
    )

    def plan(self) -> DialPlan | None:
        """The dial plan, or None without a country code."""
        if not self.country_code:
            return None
        defaults = country_defaults(self.country_code)
        tables = PrefixTables(
            mobile=_tables_of(self.mobile_prefixes, defaults.mobile),
            premium=_tables_of(self.premium_prefixes, defaults.premium),
            abroad=_tables_of(self.abroad_prefixes, defaults.abroad),
            emergency=_tables_of(self.emergency_numbers, defaults.emergency),
        )
        return DialPlan(
            NumberingPlan(self.country_code, self.national_prefix, self.international_prefix),
            tables,
            self.allowed_classes,
            self.user_classes,
            self.routes,
            self.daily_limit,
        )

    def __attrs_post_init__(self) -> None:
        if self.international_prefix == "":
            raise InvalidSetting("international_prefix", "must not be empty")
        if self.national_prefix == self.international_prefix:
            raise InvalidSetting("international_prefix", "is the same as national_prefix")


def _section(doc: str) -> Any:
    return attrs.field(metadata={_SECTION_DOC: doc})


@attrs.frozen
class Config:
    """The whole configuration. Each attribute is a section; its name is the INI section name."""

    sip: SipConfig = _section("The SIP listener and RFC 3261 protocol timers.")
    web: WebConfig = _section("The web interface.")
    store: StoreConfig = _section("Where users, registrations and call records are kept.")
    log: LogConfig = _section("What is logged, how and where.")
    registrar: RegistrarConfig = _section(
        "REGISTER handling, Digest nonces and authentication-failure throttling."
    )
    location: LocationConfig = attrs.field(
        factory=LocationConfig,
        metadata={_SECTION_DOC: "Where registrations are kept, if not in the [store] backend."},
    )
    daemon: DaemonConfig = attrs.field(
        factory=DaemonConfig,
        metadata={_SECTION_DOC: "How the daemon stops: the grace period of calls in progress."},
    )
    limits: LimitsConfig = attrs.field(
        factory=LimitsConfig,
        metadata={_SECTION_DOC: "Protection under load: per-source rate limit, overload bounds."},
    )
    calls: CallsConfig = attrs.field(
        factory=CallsConfig,
        metadata={_SECTION_DOC: "Click-to-dial calls: policy, timeouts and limits."},
    )
    cluster: ClusterConfig = attrs.field(
        factory=ClusterConfig,
        metadata={_SECTION_DOC: "Several daemons sharing one PostgreSQL database."},
    )
    media: MediaConfig = attrs.field(
        factory=MediaConfig,
        metadata={_SECTION_DOC: "The daemon's own RTP streams: ringback and tones."},
    )
    rtpengine: RtpEngineConfig = attrs.field(
        factory=RtpEngineConfig,
        metadata={
            _SECTION_DOC: "The rtpengine media relay ([media] relay).",
            _SECTION_NAME: "media:rtpengine",
        },
    )
    dialplan: DialplanConfig = attrs.field(
        factory=DialplanConfig,
        metadata={_SECTION_DOC: "Calling numbers through trunks: numbering, classes, routes."},
    )
    #: the [KIND:NAME] plugin sections (not a section of the schema)
    plugins: PluginSections = attrs.field(factory=PluginSections)
    #: the file the configuration was read from (names it in start-up errors)
    source: str = attrs.field(default="", eq=False)


def _section_classes() -> dict[str, type]:
    return {
        ini_section_name(a): a.type
        for a in attrs.fields(Config)
        if _SECTION_DOC in a.metadata and isinstance(a.type, type)
    }


def ini_section_name(section: "attrs.Attribute[Any]") -> str:
    """The INI name of a :class:`Config` attribute's section (``media:rtpengine``)."""
    name: str = section.metadata.get(_SECTION_NAME, section.name)
    return name


def _section_attributes() -> dict[str, str]:
    """INI section name -> :class:`Config` attribute name, for the schema's sections."""
    return {ini_section_name(a): a.name for a in attrs.fields(Config) if _SECTION_DOC in a.metadata}


def section_names() -> list[str]:
    """
    The sections of the schema by their INI names (``media:rtpengine``), in order; not
    the ``[KIND:NAME]`` plugin sections.
    """
    return list(_section_classes())


def iter_settings() -> Iterator[tuple[str, str, Setting]]:
    """Every key of the schema as ``(section, key, setting)``, in declaration order."""
    for section, cls in _section_classes().items():
        for a in attrs.fields(cls):
            yield section, a.name, a.metadata[_SETTING]


# --- loading ---------------------------------------------------------------------------------

# A name no real section uses: it turns off configparser's [DEFAULT] inheritance, so a
# [DEFAULT] section in a file is reported as unknown instead of leaking keys into every section.
_NO_DEFAULT_SECTION = "\0no default section"


def _read_ini(text: str, filename: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(
        interpolation=None,
        default_section=_NO_DEFAULT_SECTION,
        strict=True,
        empty_lines_in_values=False,
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=filename)
    except configparser.DuplicateOptionError as e:
        raise ConfigError(filename, f"given twice (line {e.lineno})", e.section, e.option) from None
    except configparser.DuplicateSectionError as e:
        raise ConfigError(filename, f"section given twice (line {e.lineno})", e.section) from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(
            filename, f"line {e.lineno}: {e.line.strip()!r} comes before any [section] header"
        ) from None
    except configparser.ParsingError as e:
        lineno, line = e.errors[0]
        try:  # configparser records repr(line)
            line = ast.literal_eval(line)
        except (ValueError, SyntaxError):
            pass
        raise ConfigError(
            filename, f"line {lineno}: cannot parse {line.strip()!r} (expected key = value)"
        ) from None
    return parser


def build_section(filename: str, section: str, cls: type, values: Mapping[str, str]) -> Any:
    """
    Build the section class ``cls`` (attrs fields declared with :func:`setting`) from the
    INI ``values`` of ``[section]``.

    :raises ConfigError: an unknown or missing key, a value its parser refuses.
    """
    fields = attrs.fields(cls)
    valid = [a.name for a in fields]
    for key in values:
        if key not in valid:
            problem = f"unknown key (valid keys: {', '.join(valid)})"
            raise ConfigError(filename, problem, section, key)
    parsed = {}
    for a in fields:
        spec: Setting = a.metadata[_SETTING]
        text = values.get(a.name, spec.default)
        if text is None:
            raise ConfigError(filename, "required key is missing", section, a.name)
        try:
            parsed[a.name] = spec.parse(text.strip())
        except ValueError as e:
            raise ConfigError(filename, str(e), section, a.name) from None
    try:
        return cls(**parsed)
    except InvalidSetting as e:
        raise ConfigError(filename, e.problem, section, e.key) from None


def parse_config(text: str, filename: str) -> Config:
    """
    Parse INI ``text`` into a :class:`Config`.

    :param filename: names the source in error messages.
    :raises ConfigError: the text is not valid configuration.
    """
    ini = _read_ini(text, filename)
    classes = _section_classes()
    plugin_sections: dict[str, dict[str, str]] = {}
    for section in ini.sections():
        if section in classes:
            continue
        kind, colon, name = section.partition(":")
        if not colon:
            raise ConfigError(
                filename,
                f"unknown section (valid sections: {', '.join(classes)}, and"
                f" [KIND:NAME] for a plugin, KIND one of {', '.join(PLUGIN_KINDS)})",
                section,
            )
        if kind not in PLUGIN_KINDS:
            raise ConfigError(
                filename,
                f"unknown plugin kind {kind!r} (one of {', '.join(PLUGIN_KINDS)})",
                section,
            )
        try:
            parse_plugin_name(name)
        except ValueError as e:
            raise ConfigError(filename, str(e), section) from None
        plugin_sections[section] = {k: v.strip() for k, v in ini.items(section)}
    store_values = dict(ini.items("store")) if ini.has_section("store") else {}
    # [store] url is the sql backend's url given the older way: the same as [store:sql] url.
    sql_options = plugin_sections.get("store:sql", {})
    if "url" in sql_options:
        if "url" in store_values:
            raise ConfigError(
                filename, "also given in [store:sql]: keep one of the two", "store", "url"
            )
        try:
            parse_database_url(sql_options["url"])
        except ValueError as e:
            raise ConfigError(filename, str(e), "store:sql", "url") from None
        store_values["url"] = sql_options["url"]
    if "auto_upgrade" in sql_options:
        if "auto_upgrade" in store_values:
            raise ConfigError(
                filename,
                "also given in [store:sql]: keep one of the two",
                "store",
                "auto_upgrade",
            )
        try:
            parse_yes_no(sql_options["auto_upgrade"])
        except ValueError as e:
            raise ConfigError(filename, str(e), "store:sql", "auto_upgrade") from None
        store_values["auto_upgrade"] = sql_options["auto_upgrade"]
    backend = store_values.get("backend", "sql").strip()
    if backend != "sql" and "url" in store_values:
        # Before [store:NAME], every backend got [store] url: a plugin still gets it.
        options = plugin_sections.setdefault(f"store:{backend}", {})
        options.setdefault("url", store_values["url"].strip())
    sections = {
        name: build_section(
            filename,
            name,
            cls,
            store_values
            if name == "store"
            else dict(ini.items(name))
            if ini.has_section(name)
            else {},
        )
        for name, cls in classes.items()
    }
    # [cluster] bus = postgres needs the store's IClusterStorage: checked at start-up
    # (clicktodial.cluster.service), where the store backend is known.
    attributes = _section_attributes()
    return Config(
        **{attributes[name]: value for name, value in sections.items()},
        plugins=PluginSections(plugin_sections),
        source=filename,
    )


def load_config(path: str) -> Config:
    """
    Read and parse the INI file at ``path``.

    :raises ConfigError: the file cannot be read, or is not valid configuration.
    """
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(path, f"cannot read the configuration file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(path, f"not UTF-8 text (byte {e.start})") from None
    return parse_config(text, path)
