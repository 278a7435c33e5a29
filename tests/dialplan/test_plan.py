"""Destination classes, permissions and routes of the dial plan, and its [dialplan] config."""

from __future__ import annotations

import pytest

from clicktodial.config import ConfigError, parse_config
from clicktodial.dialplan.numbers import E164
from clicktodial.dialplan.plan import DialDecision, DialPlan, DialRefused

BASE = "[sip]\ndomain = example.com\n"


def plan_of(section: str) -> DialPlan:
    plan = parse_config(BASE + "[dialplan]\n" + section, "x.ini").dialplan.plan()
    assert plan is not None
    return plan


UK = """country_code = 44
routes =
    +447 mobile backup
    +44 uk_main uk_backup
    + world
user_classes =
    carol national mobile international premium
    dave none
"""


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        ("442079460958", "national"),
        ("441612345678", "national"),
        ("447700900123", "mobile"),
        ("447024123456", "premium"),  # 070 personal numbers: premium inside 07
        ("449098790000", "premium"),
        ("448712345678", "premium"),
        ("4411811811", "premium"),
        ("33123456789", "international"),
        ("18765551234", "international"),
    ],
)
def test_uk_defaults_classify(number: str, expected: str) -> None:
    assert plan_of(UK).classify(E164(number)) == expected


def test_nanp_caribbean_area_codes_are_international() -> None:
    """+1 876 (Jamaica) is abroad, the classic toll-fraud destination; +1 212 is national."""
    plan = plan_of("country_code = 1\nnational_prefix = 1\ninternational_prefix = 011\n")
    assert plan.classify(E164("18765551234")) == "international"
    assert plan.classify(E164("12125550123")) == "national"
    assert plan.classify(E164("19005550123")) == "premium"


def test_international_and_premium_are_blocked_by_default() -> None:
    plan = plan_of(UK)
    assert plan.decide("bob", E164("442079460958")) == DialDecision(
        E164("442079460958"), "national", ("uk_main", "uk_backup")
    )
    for number, cls in (("33123456789", "international"), ("449098790000", "premium")):
        with pytest.raises(DialRefused) as info:
            plan.decide("bob", E164(number))
        assert info.value.reason == "class-not-allowed"
        assert f"{cls} numbers are not allowed for bob" in info.value.message


def test_per_user_classes_replace_the_default() -> None:
    plan = plan_of(UK)
    assert plan.decide("carol", E164("33123456789")).trunks == ("world",)
    assert plan.decide("carol", E164("449098790000")).destination_class == "premium"
    with pytest.raises(DialRefused):
        plan.decide("dave", E164("442079460958"))


def test_routes_first_match_wins_with_fail_over_order() -> None:
    plan = plan_of(UK)
    assert plan.decide("bob", E164("447700900123")).trunks == ("mobile", "backup")


def test_no_route_is_a_refusal() -> None:
    plan = plan_of("country_code = 44\nroutes = +447 mobile\n")
    with pytest.raises(DialRefused) as info:
        plan.decide("bob", E164("442079460958"))
    assert info.value.reason == "no-route"


def test_emergency_numbers_are_refused_with_words() -> None:
    plan = plan_of(UK)
    for text in ("999", "112"):
        with pytest.raises(DialRefused) as info:
            plan.number_of(text)
        assert info.value.reason == "emergency"
        assert "call it from your phone" in info.value.message


def test_tables_can_be_given_or_emptied() -> None:
    plan = plan_of("country_code = 44\nmobile_prefixes = none\npremium_prefixes = +4491, 4492\n")
    assert plan.classify(E164("447700900123")) == "national"
    assert plan.classify(E164("449198790000")) == "premium"
    assert plan.classify(E164("449398790000")) == "national"


def test_no_country_code_means_no_dial_plan() -> None:
    assert parse_config(BASE, "x.ini").dialplan.plan() is None


@pytest.mark.parametrize(
    ("section", "key", "words"),
    [
        ("country_code = 044", "country_code", "invalid country code"),
        ("allowed_classes = national, emergency", "allowed_classes", "always refused"),
        ("allowed_classes = cheap", "allowed_classes", "unknown class 'cheap'"),
        ("routes = 44 uk", "routes", "invalid route prefix"),
        ("routes = +44", "routes", "names no trunk"),
        ("routes = +44 UK-Main", "routes", "UK-Main"),
        ("user_classes = Bob national", "user_classes", "invalid user name"),
        ("user_classes =\n    bob national\n    bob mobile", "user_classes", "given twice"),
        ("user_classes = bob", "user_classes", "names no class"),
        ("mobile_prefixes = +4x", "mobile_prefixes", "invalid prefix"),
        ("emergency_numbers = 9", "emergency_numbers", "invalid short number"),
        ("national_prefix = 00", "international_prefix", "same as national_prefix"),
        ("daily_limit = -1", "daily_limit", "invalid number"),
        ("trunk = x", "trunk", "unknown key"),
    ],
)
def test_bad_config_names_file_section_and_key(section: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        country = "" if section.startswith("country_code") else "country_code = 44\n"
        parse_config(f"{BASE}[dialplan]\n{country}{section}\n", "dial.ini")
    message = str(info.value)
    assert message.startswith("dial.ini: ")
    assert "[dialplan]" in message and key in message and words in message
