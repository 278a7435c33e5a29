"""The [registrar] config section and its translation into registrar settings."""

from __future__ import annotations

import pytest

from clicktodial.config import ConfigError, parse_config
from clicktodial.sip.registrar import RegistrarSettings, settings_from_config
from clicktodial.throttle import ThrottleSettings

MINIMAL = "[sip]\ndomain = example.com\n"


def registrar_section(body: str) -> str:
    return MINIMAL + "[registrar]\n" + body


def test_defaults_are_the_registrar_defaults() -> None:
    """Without a [registrar] section the registrar gets its own defaults."""
    config = parse_config(MINIMAL, "x.ini")
    registrar, throttle = settings_from_config(config.registrar)
    assert registrar == RegistrarSettings()
    assert throttle == ThrottleSettings()


def test_every_key_reaches_the_settings() -> None:
    """Each key of the section sets its setting."""
    config = parse_config(
        registrar_section(
            "default_expires = 1800\nmin_expires = 120\nmax_expires = 7200\n"
            "aliases = 192.0.2.1, [2001:DB8::1], Sip.Example.COM\n"
            "purge_interval = 0\nnonce_lifetime = 60\n"
            "nonce_secret = 0123456789abcdef-shared\nmax_delayed = 10\n"
            "digest_algorithms = md5, SHA-256\n"
            "auth_free_failures = 1\nauth_base_delay = 2\nauth_max_delay = 16\n"
            "auth_refuse_after = 0\nauth_refuse_seconds = 30\n"
            "auth_forget_after = 60\nauth_max_tracked = 50\n"
        ),
        "x.ini",
    )
    registrar, throttle = settings_from_config(config.registrar)
    assert registrar == RegistrarSettings(
        default_expires=1800,
        min_expires=120,
        max_expires=7200,
        aliases=frozenset({"192.0.2.1", "2001:db8::1", "sip.example.com"}),
        purge_interval=0.0,
        nonce_lifetime=60.0,
        nonce_secret=b"0123456789abcdef-shared",
        max_delayed=10,
        digest_algorithms=("MD5", "SHA-256"),
    )
    assert throttle == ThrottleSettings(
        free_failures=1,
        base_delay=2.0,
        max_delay=16.0,
        refuse_after=0,
        refuse_seconds=30.0,
        forget_after=60.0,
        max_entries=50,
    )


@pytest.mark.parametrize(
    "body,key",
    [
        ("min_expires = 7200\n", "min_expires"),
        ("max_expires = 60\n", "max_expires"),
        ("default_expires = 0\n", "default_expires"),
        ("nonce_secret = short\n", "nonce_secret"),
        ("aliases = not a host\n", "aliases"),
        ("auth_free_failures = -1\n", "auth_free_failures"),
        ("auth_max_tracked = 0\n", "auth_max_tracked"),
        ("nonce_lifetime = 0\n", "nonce_lifetime"),
        ("digest_algorithms = SHA-1\n", "digest_algorithms"),
        ("digest_algorithms = MD5, md5\n", "digest_algorithms"),
        ("digest_algorithms =\n", "digest_algorithms"),
    ],
)
def test_bad_values_name_their_key(body: str, key: str) -> None:
    """A bad value stops start-up naming [registrar] and the key."""
    with pytest.raises(ConfigError) as info:
        parse_config(registrar_section(body), "x.ini")
    assert (info.value.section, info.value.key) == ("registrar", key)


def test_secret_not_echoed() -> None:
    """A rejected secret is not repeated in the error message."""
    with pytest.raises(ConfigError) as info:
        parse_config(registrar_section("nonce_secret = hunter2\n"), "x.ini")
    assert "hunter2" not in str(info.value)
