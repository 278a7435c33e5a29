"""Number normalisation: every written form of a number becomes E.164, garbage a clear error."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clicktodial.dialplan.numbers import (
    E164,
    InvalidNumber,
    LocalName,
    NumberingPlan,
    parse_number,
    parse_target,
)

UK = NumberingPlan("44", "0", "00")
US = NumberingPlan("1", "1", "011")
DOMAIN = "example.com"


@pytest.mark.parametrize(
    "text",
    [
        "+44 20 7946 0958",
        "+442079460958",
        "020 7946 0958",
        "0044 20 7946 0958",
        "(020) 7946-0958",
        "020.7946.0958",
        "+44 (0)20 7946 0958".replace("(0)", ""),
        "tel:+442079460958",
        "tel:+44-20-7946-0958",
        "TEL:+44.20.7946.0958",
        "tel:7946-0958;phone-context=+4420",
        "tel:79460958;phone-context=+44-20",
        "tel:%2B442079460958",
        "sip:+442079460958@example.com;user=phone",
        "sip:+442079460958@gateway.example.net",
        "sips:+44-20-7946-0958@example.com;user=phone",
        "sip:7946-0958;phone-context=+4420@example.com;user=phone",
        "  +44 20 7946 0958  ",
    ],
)
def test_every_written_form_of_a_london_number_is_the_same_e164(text: str) -> None:
    assert parse_target(text, UK, DOMAIN) == E164("442079460958")


@pytest.mark.parametrize(
    "text",
    [
        "alice",
        "1001",
        "sip:alice@example.com",
        "sip:Alice@EXAMPLE.com",
        "sip:1001@example.com:5060",
    ],
)
def test_user_names_and_addresses_of_our_domain_stay_local(text: str) -> None:
    """Directory names and extensions are local calls; the caller asks the directory."""
    assert isinstance(parse_target(text, UK, DOMAIN), LocalName)


def test_a_digits_only_name_not_in_the_directory_reads_as_a_number() -> None:
    """'02079460958' is a valid user name: parse_number reads it as the number it also is."""
    for digits in ("02079460958", "00442079460958"):
        assert parse_target(digits, UK, DOMAIN) == LocalName(digits)
        assert parse_number(digits, UK) == E164("442079460958")


def test_north_american_prefixes() -> None:
    assert parse_number("011 44 20 7946 0958", US) == E164("442079460958")
    assert parse_number("1 (212) 555-0123", US) == E164("12125550123")
    assert parse_number("+1 212 555 0123", US) == E164("12125550123")


def test_a_country_without_national_prefix_adds_the_country_code() -> None:
    plan = NumberingPlan("45", "", "00")
    assert parse_number("32 12 34 56", plan) == E164("4532123456")


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "no number"),
        ("   ", "no number"),
        ("Bob Smith", "not a telephone number"),
        ("+44 20 7946 095x", "not a telephone number"),
        ("+0 20 7946 0958", "never starts with 0"),
        ("+44 12", "7 to 15 digits"),
        ("+44 1234 5678 9012 3456", "7 to 15 digits"),
        ("7946 0958", "with its prefix 0"),
        ("tel:7946-0958", "phone-context"),
        ("tel:7946-0958;phone-context=example.com", "only a +DIGITS phone-context"),
        ("tel:+442079460958;ext=22", "extensions"),
        ("tel:+44;phone-context=+44;phone-context=+44", "twice"),
        ("http://example.com/", "only tel: and sip:"),
        ("javascript:alert(1)", "only tel: and sip:"),
        ("sip:bob@other.example", "addresses of example.com"),
        ("sip:example.com", "user part"),
        ("sip:Bob%20Smith@example.com", "not a user name"),
        ("+44\x0020 7946", "control characters"),
        ("+" + "1" * 300, "longer than 256"),
    ],
)
def test_garbage_is_a_clear_error(text: str, words: str) -> None:
    with pytest.raises(InvalidNumber) as info:
        parse_target(text, UK, DOMAIN)
    assert words in str(info.value)


_E164 = st.from_regex(r"[1-9][0-9]{6,14}", fullmatch=True)
_SEPARATOR = st.sampled_from(["", " ", "-", ".", "  "])


def _spread(digits: str, separators: list[str]) -> str:
    return "".join(d + separators[i % len(separators)] for i, d in enumerate(digits)).strip()


@given(_E164, st.lists(_SEPARATOR, min_size=1, max_size=5))
def test_international_forms_round_trip(digits: str, separators: list[str]) -> None:
    """+DIGITS, 00DIGITS and tel:/sip: forms, with any separators, give the same E.164."""
    spread = _spread(digits, separators)
    expected = E164(digits)
    assert parse_target("+" + spread, UK, DOMAIN) == expected
    assert parse_number("00" + spread, UK) == expected
    assert parse_target("tel:+" + spread.replace(" ", "-"), UK, DOMAIN) == expected
    assert parse_target(f"sip:+{digits}@example.org;user=phone", UK, DOMAIN) == expected
    assert str(expected) == "+" + digits


@given(st.from_regex(r"[1-9][0-9]{5,12}", fullmatch=True), st.lists(_SEPARATOR, min_size=1))
def test_national_forms_round_trip(national: str, separators: list[str]) -> None:
    """0 + a national number is +44 + that number, however it is spaced."""
    assert parse_number("0" + _spread(national, separators), UK) == E164("44" + national)


@given(st.text(max_size=300))
def test_any_text_is_a_target_or_a_clear_error(text: str) -> None:
    """Nothing a page can link raises anything but InvalidNumber."""
    try:
        target = parse_target(text, UK, DOMAIN)
    except InvalidNumber as e:
        assert str(e)
    else:
        assert isinstance(target, LocalName | E164)
        if isinstance(target, E164):
            assert target.digits.isdigit() and 7 <= len(target.digits) <= 15
