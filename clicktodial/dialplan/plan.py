"""
The dial plan (pure: no Twisted, no I/O): the class of an E.164 number, who may dial
which classes, and the trunks a number is routed to (docs/dialplan.md).

:meth:`DialPlan.decide` gives a :class:`DialDecision` (number, class, trunks in fail-over
order) or raises :class:`DialRefused` with a reason code and words for the user. The
daily cap is counted elsewhere (:class:`clicktodial.interfaces.IOutboundQuota`): it needs
the store, atomically.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from attrs import field, frozen

from clicktodial.calls.values import CallRefused
from clicktodial.dialplan.numbers import E164, InvalidNumber, NumberingPlan, parse_number

__all__ = [
    "ALLOWABLE_CLASSES",
    "CLASSES",
    "DEFAULT_ALLOWED",
    "DialDecision",
    "DialPlan",
    "DialRefused",
    "PrefixTables",
    "Route",
    "country_defaults",
]

#: Destination classes, cheapest first. ``local`` is a directory user (no dial plan).
CLASSES = ("local", "national", "mobile", "international", "premium", "emergency")

#: Classes a user may be allowed. Emergency numbers are always refused: a click-to-dial
#: call comes from the daemon's trunk, not the user's phone line, so the emergency service
#: would get neither the caller's location nor a line to call back (docs/dialplan.md).
ALLOWABLE_CLASSES = ("national", "mobile", "international", "premium")

#: What a user may dial unless ``[dialplan] allowed_classes`` or ``user_classes`` says
#: otherwise: international and premium numbers are blocked unless allowed (toll fraud).
DEFAULT_ALLOWED = frozenset({"national", "mobile"})


class DialRefused(CallRefused):
    """
    A number may not be dialled: a :class:`CallRefused` whose ``reason`` is
    ``invalid-number``, ``emergency``, ``class-not-allowed``, ``no-route``,
    ``daily-limit``, ``no-dial-plan`` or ``no-quota``, and ``message`` says why in words
    for the user.
    """


@frozen
class PrefixTables:
    """
    Prefixes of E.164 numbers (digits, without ``+``) that put a number in a class; the
    longest matching prefix wins. A number in the country (``country_code``) matching
    none is ``national``; any other is ``international``.

    :ivar abroad: ranges inside the country code that are other countries (NANP: the
        Caribbean area codes): ``international``, the classic toll-fraud destination.
    :ivar emergency: national short numbers (``999``, ``112``), as dialled.
    """

    mobile: frozenset[str] = frozenset()
    premium: frozenset[str] = frozenset()
    abroad: frozenset[str] = frozenset()
    emergency: frozenset[str] = frozenset()


# Defaults for a few countries; others start with no mobile or premium ranges (every
# national number is "national": set premium_prefixes before allowing national calls).
_NANP_ABROAD = "242 246 264 268 284 345 441 473 649 658 664 721 758 767 784 809 829 849 868 869 876"
_DEFAULTS: dict[str, dict[str, str]] = {
    # UK (Ofcom numbering): 07 mobile except 070 personal and 076 pagers (premium-rated in
    # practice); 09 premium, 087 and 084 special rate, 118 directory enquiries.
    "44": {"mobile": "447", "premium": "4470 4476 449 4487 4484 44118", "emergency": "999 112"},
    # North America: mobiles share area codes; 900/976 premium; the Caribbean is abroad.
    "1": {
        "premium": "1900 1976",
        "abroad": " ".join("1" + a for a in _NANP_ABROAD.split()),
        "emergency": "911 112",
    },
    # France: 06/07 mobile, 08 special and premium (089 the dearest).
    "33": {"mobile": "336 337", "premium": "338", "emergency": "112 15 17 18 114"},
    # Germany: 015-017 mobile, 0900 premium, 0137 televoting, 0180 special rate.
    "49": {
        "mobile": "4915 4916 4917",
        "premium": "49900 49137 49180 49118",
        "emergency": "112 110",
    },
}


def country_defaults(country_code: str) -> PrefixTables:
    """The built-in prefix tables of ``country_code`` (empty for a country we have none)."""
    table = _DEFAULTS.get(country_code, {})
    return PrefixTables(**{k: frozenset(v.split()) for k, v in table.items()})


@frozen
class Route:
    """Numbers starting with ``prefix`` (E.164 digits; empty: all) go to ``trunks``, in order."""

    prefix: str
    trunks: tuple[str, ...]


@frozen
class DialDecision:
    """A number that may be dialled: its class and the trunks to try, in order."""

    number: E164
    destination_class: str
    trunks: tuple[str, ...]


def _longest(prefixes: Iterable[str], digits: str) -> int:
    return max((len(p) for p in prefixes if digits.startswith(p)), default=-1)


@frozen
class DialPlan:
    """
    ``[dialplan]`` as values.

    :ivar allowed: the classes users may dial by default.
    :ivar user_allowed: per user name, the classes that user may dial instead.
    :ivar routes: first match wins.
    :ivar daily_limit: outbound calls a user may place a day (UTC); 0: no limit.
    """

    numbering: NumberingPlan
    tables: PrefixTables = PrefixTables()
    allowed: frozenset[str] = DEFAULT_ALLOWED
    user_allowed: Mapping[str, frozenset[str]] = field(factory=dict, hash=False)
    routes: tuple[Route, ...] = ()
    daily_limit: int = 0

    def classify(self, number: E164) -> str:
        """The class of ``number``: national, mobile, international or premium."""
        digits = number.digits
        if not digits.startswith(self.numbering.country_code):
            return "international"
        if _longest(self.tables.abroad, digits) >= 0:
            return "international"
        premium = _longest(self.tables.premium, digits)
        mobile = _longest(self.tables.mobile, digits)
        if premium < 0 and mobile < 0:
            return "national"
        # The longer prefix is the more specific rule (UK 070 is premium inside 07 mobile).
        return "premium" if premium >= mobile else "mobile"

    def allowed_for(self, username: str) -> frozenset[str]:
        """The classes ``username`` may dial."""
        return self.user_allowed.get(username, self.allowed)

    def route(self, number: E164) -> Route | None:
        """The first route whose prefix ``number`` starts with."""
        for route in self.routes:
            if number.digits.startswith(route.prefix):
                return route
        return None

    def number_of(self, text: str) -> E164:
        """
        Digits as dialled (or a number already read) as E.164.

        :raises DialRefused: ``emergency`` for an emergency number, ``invalid-number``.
        """
        if text.strip() in self.tables.emergency:
            raise DialRefused(
                "emergency", f"{text.strip()} is an emergency number: call it from your phone"
            )
        try:
            return parse_number(text, self.numbering)
        except InvalidNumber as e:
            raise DialRefused("invalid-number", str(e)) from None

    def decide(self, username: str, number: E164) -> DialDecision:
        """
        May ``username`` dial ``number``, and through which trunks?

        :raises DialRefused: ``class-not-allowed`` or ``no-route``.
        """
        destination_class = self.classify(number)
        if destination_class not in self.allowed_for(username):
            raise DialRefused(
                "class-not-allowed",
                f"{number}: {destination_class} numbers are not allowed for {username}",
            )
        route = self.route(number)
        if route is None:
            raise DialRefused("no-route", f"{number}: no route for this number")
        return DialDecision(number, destination_class, route.trunks)
