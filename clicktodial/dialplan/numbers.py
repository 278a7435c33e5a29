"""
What a user types or a page links, as a dial target (pure: no Twisted, no I/O).

A target is either a directory user (:class:`LocalName`: an extension or user name, or a
``sip:`` address of our own domain) or a telephone number in E.164 (:class:`E164`), read
by the :class:`NumberingPlan` of ``[dialplan]``:

- ``+44 20 7946 0958``, ``(020) 7946-0958`` (national prefix ``0``),
  ``00442079460958`` (international prefix ``00``);
- ``tel:+442079460958`` and ``tel:7946-0958;phone-context=+4420`` (RFC 3966 §5.1.5);
- ``sip:+442079460958@example.com;user=phone`` (RFC 3261 §19.1.6).

Anything else raises :class:`InvalidNumber` with a message fit to show the user.
"""

from __future__ import annotations

import re
from urllib.parse import unquote

from attrs import frozen

from clicktodial.store.values import is_valid_username

__all__ = [
    "E164",
    "InvalidNumber",
    "LocalName",
    "NumberingPlan",
    "Target",
    "parse_target",
]

#: The longest input looked at: a tel: or sip: URI with parameters fits easily.
MAX_INPUT = 256

#: E.164 §6.1: at most 15 digits, country code included. Fewer than 7 is no full
#: international number anywhere (the shortest are 7 digits, e.g. +6831234 Niue).
E164_MIN_DIGITS = 7
E164_MAX_DIGITS = 15

# RFC 3966 visual-separator, plus the space and "/" people type.
_SEPARATORS = re.compile(r"[\s\-.()/\u00a0]")
_DIGITS = re.compile(r"[0-9]+")
_DIALLED = re.compile(r"[0-9.\-]+")


class InvalidNumber(ValueError):
    """Not a number or a user name this daemon can call; ``str()`` says why."""


@frozen
class NumberingPlan:
    """
    How numbers are written in the daemon's country (``[dialplan]``).

    :ivar country_code: the E.164 country code, digits (``44``).
    :ivar national_prefix: the trunk prefix of national numbers (``0``), or empty where
        national numbers are dialled without one.
    :ivar international_prefix: what is dialled before a country code instead of ``+``
        (``00``; ``011`` in North America).
    """

    country_code: str
    national_prefix: str = "0"
    international_prefix: str = "00"


@frozen
class LocalName:
    """A directory user or extension, called as today (no dial plan)."""

    name: str


@frozen
class E164:
    """A telephone number in E.164: ``digits`` without the ``+``, country code first."""

    digits: str

    def __str__(self) -> str:
        return f"+{self.digits}"


Target = LocalName | E164


def _e164(digits: str, shown: str) -> E164:
    if not digits or digits[0] == "0":
        raise InvalidNumber(f"{shown!r}: a country code never starts with 0")
    if not E164_MIN_DIGITS <= len(digits) <= E164_MAX_DIGITS:
        raise InvalidNumber(
            f"{shown!r}: an international number has {E164_MIN_DIGITS} to {E164_MAX_DIGITS}"
            f" digits ({len(digits)} given)"
        )
    return E164(digits)


def _strip_separators(text: str, shown: str) -> str:
    compact = _SEPARATORS.sub("", text)
    body = compact[1:] if compact.startswith("+") else compact
    if not _DIGITS.fullmatch(body):
        raise InvalidNumber(f"{shown!r} is not a telephone number or a user name")
    return compact


def _dialled(text: str, plan: NumberingPlan, shown: str) -> E164:
    """A number as dialled on a phone of the country: ``+``, international, national."""
    compact = _strip_separators(text, shown)
    if compact.startswith("+"):
        return _e164(compact[1:], shown)
    if compact.startswith(plan.international_prefix):
        return _e164(compact[len(plan.international_prefix) :], shown)
    if plan.national_prefix and compact.startswith(plan.national_prefix):
        return _e164(plan.country_code + compact[len(plan.national_prefix) :], shown)
    if not plan.national_prefix:
        return _e164(plan.country_code + compact, shown)
    raise InvalidNumber(
        f"{shown!r}: dial a national number with its prefix {plan.national_prefix},"
        f" or an international one with + or {plan.international_prefix}"
    )


def _telephone_subscriber(text: str, shown: str) -> E164:
    """RFC 3966 §3 ``telephone-subscriber``: a global number, or a local one with context."""
    number, *parameters = text.split(";")
    names: dict[str, str] = {}
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        name = name.strip().lower()
        if name in names:
            raise InvalidNumber(f"{shown!r}: parameter {name} given twice")
        names[name] = value.strip()
    if "ext" in names or "isub" in names:
        # An extension or subaddress behind the number cannot be dialled by a trunk call.
        raise InvalidNumber(f"{shown!r}: extensions and subaddresses cannot be dialled")
    compact = _strip_separators(number, shown)
    if compact.startswith("+"):
        return _e164(compact[1:], shown)
    context = names.get("phone-context")
    if context is None:
        raise InvalidNumber(f"{shown!r}: a local number needs ;phone-context=+DIGITS")
    if not context.startswith("+"):
        raise InvalidNumber(
            f"{shown!r}: only a +DIGITS phone-context is understood, not {context!r}"
        )
    prefix = _strip_separators(context, shown)
    return _e164(prefix[1:] + compact, shown)


def parse_target(text: str, plan: NumberingPlan, domain: str) -> Target:
    """
    Read ``text`` as a dial target.

    A plain user name (``alice``, ``1001``) is a :class:`LocalName`, as is
    ``sip:NAME@DOMAIN`` for our ``domain``; the caller tells whether the directory has it,
    and reads a digits-only name it does not have as a number (:func:`parse_number`).

    :raises InvalidNumber: not a number or name; the message says why.
    """
    if len(text) > MAX_INPUT:
        raise InvalidNumber(f"longer than {MAX_INPUT} characters")
    stripped = text.strip()
    if not stripped:
        raise InvalidNumber("no number given")
    if not stripped.isprintable():
        raise InvalidNumber("control characters are not allowed")
    scheme, colon, rest = stripped.partition(":")
    scheme = scheme.lower()
    if colon and scheme == "tel":
        return _telephone_subscriber(unquote(rest), stripped)
    if colon and scheme in ("sip", "sips"):
        return _sip_target(rest, plan, domain, stripped)
    if colon:
        raise InvalidNumber(f"{stripped!r}: only tel: and sip: addresses can be called")
    # A user name, or an extension (digits only; the directory tells, see above). Digits
    # with separators (020.7946.0958) are valid user names too, but written as a number.
    if is_valid_username(stripped) and (stripped.isdigit() or not _DIALLED.fullmatch(stripped)):
        return LocalName(stripped)
    return _dialled(stripped, plan, stripped)


def parse_number(text: str, plan: NumberingPlan) -> E164:
    """``text`` (digits as dialled on a phone) as an E.164 number; see :func:`parse_target`."""
    return _dialled(text.strip(), plan, text.strip())


def _sip_target(rest: str, plan: NumberingPlan, domain: str, shown: str) -> Target:
    # RFC 3261 §19.1.1: sip:user[:password]@host[:port];uri-parameters?headers
    address, _, _headers = rest.partition("?")
    user_part, at, host_part = address.rpartition("@")
    if not at or not user_part:
        raise InvalidNumber(f"{shown!r}: a sip: address needs a user part")
    host, *uri_parameters = host_part.split(";")
    user_is_phone = any(p.strip().lower() == "user=phone" for p in uri_parameters)
    user = unquote(user_part.partition(":")[0])
    if user_is_phone or user.startswith("+"):
        return _telephone_subscriber(user, shown)
    # The host without its port; an IPv6 reference keeps its brackets ([::1]:5060).
    host = (
        host.partition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
    ).lower()
    if host != domain.lower():
        raise InvalidNumber(
            f"{shown!r}: only numbers (user=phone) and addresses of {domain} can be called"
        )
    name = user.lower()
    if not is_valid_username(name):
        raise InvalidNumber(f"{shown!r}: {user!r} is not a user name")
    return LocalName(name)
