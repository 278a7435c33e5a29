"""conf/example.ini documents every [trunk:NAME] key with its real default."""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from clicktodial.config import build_section
from clicktodial.trunks.config import TrunkConfig

EXAMPLE = Path(__file__).parents[2] / "conf" / "example.ini"


def _trunk_block() -> dict[str, str]:
    text = EXAMPLE.read_text()
    block = text[text.index("# [trunk:provider]") :]
    return dict(re.findall(r"^# (\w+) = ?(.*)$", block, re.M))


def test_every_trunk_key_is_documented() -> None:
    documented = _trunk_block()
    for field in attrs.fields(TrunkConfig):
        assert field.name in documented, f"example.ini lacks [trunk:NAME] {field.name}"


def test_documented_values_are_the_defaults_except_required_keys() -> None:
    """Uncommenting the block gives the defaults (required keys take the shown values)."""
    documented = _trunk_block()
    required = {"proxy", "username", "password"}
    shown = build_section("example.ini", "trunk:provider", TrunkConfig, documented)
    defaults = build_section(
        "example.ini", "trunk:provider", TrunkConfig, {k: documented[k] for k in required}
    )
    assert shown == defaults
