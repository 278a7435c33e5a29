"""normal_host remembers what it found (a bounded cache): the answer is the same, cached or not."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from clicktodial.sip import registrar
from clicktodial.sip.registrar import normal_host
from clicktodial.sip.wirecache import reset_all

HOSTS = st.one_of(
    st.ip_addresses().map(lambda a: f"[{a}]" if a.version == 6 else str(a)),
    st.ip_addresses(v=6).map(lambda a: str(a).upper()),
    st.from_regex(r"[A-Za-z0-9.-]{1,30}", fullmatch=True),
    st.text(max_size=20),
)


@given(HOSTS)
def test_cached_answer_is_the_uncached_one(host: str) -> None:
    """A host normalised twice (the second time from the cache), or from a cold cache,
    gives what the computation itself gives."""
    reset_all()
    first = normal_host(host)
    assert first == registrar._normal_host(host)
    assert normal_host(host) == first


def test_examples() -> None:
    """RFC 3261 §19.1.4: lower case; IPv6 without brackets, compressed (RFC 5952)."""
    reset_all()
    assert normal_host("Example.COM") == "example.com"
    assert normal_host("[2001:DB8:0::10]") == "2001:db8::10"
    assert normal_host("2001:db8::10") == "2001:db8::10"
    assert normal_host("[not:an:address") == "not:an:address"


def test_the_cache_is_bounded() -> None:
    """Hosts come from the network: the memory never holds more than its limit."""
    reset_all()
    limit = registrar._NORMAL_HOST_CACHE.limit
    for i in range(limit + 10):
        assert normal_host(f"H{i}.example") == f"h{i}.example"
    assert len(registrar._NORMAL_HOSTS) <= limit
