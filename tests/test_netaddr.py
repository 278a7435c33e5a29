"""NetworkSet: who is trusted, as the configuration names them."""

import pytest

from clicktodial.netaddr import NetworkSet


def test_addresses_and_networks_match_their_hosts() -> None:
    trusted = NetworkSet.parse("127.0.0.5, 192.0.2.0/24, ::1")
    assert "127.0.0.5" in trusted
    assert "192.0.2.200" in trusted
    assert "::1" in trusted and "[::1]" in trusted
    assert "::ffff:127.0.0.5" in trusted  # IPv4-mapped is the IPv4 address
    assert "127.0.0.6" not in trusted
    assert "198.51.100.1" not in trusted


def test_a_host_name_is_never_trusted() -> None:
    assert "localhost" not in NetworkSet.parse("127.0.0.0/8")


def test_dash_is_the_empty_set() -> None:
    empty = NetworkSet.parse("-")
    assert not empty and "127.0.0.1" not in empty
    assert str(empty) == "-"


@pytest.mark.parametrize("text", ["192.0.2.1/24", "example.com", "300.1.1.1", ""])
def test_bad_entries_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        NetworkSet.parse(text)
