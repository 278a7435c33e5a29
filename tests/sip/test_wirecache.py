"""The wire-format memories: one bounded tool, one reset, no growth from the network.

Every memory the parser and the header/URI readers keep is a
:class:`clicktodial.sip.wirecache.BoundedCache`; these tests hold the tool to
its eviction rule and the wire-format code to using it, and flood the parser
with distinct texts to show no memory outgrows its limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from clicktodial.sip import headers, message, parser, uri, wirecache
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import parse_message
from clicktodial.sip.wirecache import DEFAULT_LIMIT, BoundedCache

# Every memory filled from network input in the wire-format modules.
WIRE_CACHES = {
    "sip.header-names",
    "sip.header-keys",
    "sip.canonical-header-keys",
    "sip.well-formed-vias",
    "sip.well-formed-name-addrs",
    "sip.well-formed-contacts",
    "sip.well-formed-request-uris",
    "sip.header-layouts",
    "sip.start-lines",
    "sip.vias-by-shape",
    "sip.name-addrs-by-shape",
    "sip.uris",
}

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.example.com:5060;branch=z9hG4bK776asdhds\r\n"
    b"To: <sip:bob@example.com>;tag=a6c85cf\r\n"
    b"From: <sip:alice@example.com>;tag=1928301774\r\n"
    b"Call-ID: a84b4c76e66710@pc33.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4:5060>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)


def test_a_full_cache_is_emptied_before_a_new_entry() -> None:
    """Eviction rule: at the limit, a new key first empties the cache; it never holds
    more than its limit, and what it holds is only what was remembered since."""
    cache: BoundedCache[str, int] = BoundedCache("test.rule", limit=3)
    for i in range(3):
        assert cache.remember(f"k{i}", i) == i
    assert cache.entries == {"k0": 0, "k1": 1, "k2": 2}
    cache.remember("k3", 3)
    assert cache.entries == {"k3": 3}
    for i in range(4, 100):
        cache.remember(f"k{i}", i)
        assert len(cache) <= 3


def test_replacing_a_key_of_a_full_cache_keeps_the_rest() -> None:
    """A key already held is replaced in place, even when the cache is full."""
    cache: BoundedCache[str, int] = BoundedCache("test.replace", limit=2)
    cache.remember("a", 1)
    cache.remember("b", 2)
    cache.remember("a", 3)
    assert cache.entries == {"a": 3, "b": 2}


def test_the_seed_survives_emptying_and_reset() -> None:
    """Seed entries are there from the start and come back whenever the cache is emptied."""
    cache: BoundedCache[str, int] = BoundedCache("test.seed", limit=3, seed={"s": 0})
    entries = cache.entries
    cache.remember("a", 1)
    cache.remember("b", 2)
    cache.remember("c", 3)  # full: emptied, seed put back, then c
    assert cache.entries == {"s": 0, "c": 3}
    cache.clear()
    assert cache.entries == {"s": 0}
    # Emptied in place: a hot path's reference to the dict stays good.
    assert cache.entries is entries


def test_a_limit_that_leaves_no_room_beyond_the_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="limit 1 must exceed its 1 seeds"):
        BoundedCache("test.no-room", limit=1, seed={"s": 0})


def test_two_caches_in_use_cannot_share_a_name() -> None:
    first: BoundedCache[str, int] = BoundedCache("test.twice")
    with pytest.raises(ValueError, match="'test.twice' is in use already"):
        BoundedCache("test.twice")
    del first
    # Gone from the registry with its last user: the name is free again.
    assert BoundedCache("test.twice").name == "test.twice"


def test_every_wire_memory_is_a_registered_bounded_cache() -> None:
    """The parser's, the header readers', the header-name and the URI memories are all
    in the registry, with the default limit."""
    caches = {c.name: c for c in wirecache.registered()}
    assert WIRE_CACHES <= set(caches)
    for name in WIRE_CACHES:
        assert caches[name].limit == DEFAULT_LIMIT, name


def test_wire_modules_keep_no_other_module_level_dict_or_set_memory() -> None:
    """No module-level dict or set in the wire-format modules is filled at run time
    outside the tool: every such global is either a BoundedCache's entries, or never
    written after import (checked by its identity and contents across a parse)."""
    modules = (parser, message, headers, uri)
    before = {
        (m.__name__, name): (value, dict(value) if isinstance(value, dict) else set(value))
        for m in modules
        for name, value in vars(m).items()
        if isinstance(value, dict | set)
    }
    owned = {id(c.entries) for c in wirecache.registered()}
    wirecache.reset_all()
    data = OK_200.replace(b"Contact:", b"X-Never-Seen-Before: 1\r\nContact:")
    m = parse_message(data)
    m.top_via, m.from_, m.to, m.contacts  # noqa: B018
    for (module, name), (value, copy) in before.items():
        if id(value) not in owned:
            assert value == copy, f"{module}.{name} changed while parsing"


def _flood_message(i: int) -> bytes:
    """A request in which every remembered text is new: start line, Via sent-by, From,
    To, Contact, an unknown header name (so the layout too)."""
    return (
        f"OPTIONS sip:u{i}@h{i}.example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP h{i}.example.com;branch=z9hG4bK{i}\r\n"
        f"From: <sip:f{i}@example.com>;tag={i}\r\n"
        f"To: <sip:t{i}@example.com>\r\n"
        f"Call-ID: {i}@example.com\r\n"
        f"CSeq: 1 OPTIONS\r\n"
        f"Contact: <sip:c{i}@192.0.2.1>\r\n"
        f"X-Flood-{i}: 1\r\n"
        f"Content-Length: 0\r\n"
        f"\r\n"
    ).encode()


def test_reset_all_empties_every_wire_memory_but_the_usual_header_names() -> None:
    """After reset_all, the memories hold nothing a message brought; the header-name
    memories hold the names known before any input (their seed)."""
    data = _flood_message(-1).replace(b"X-Flood--1", b"X-Brought-By-A-Message")
    parse_message(data)  # (the careful path, then the fast one: every memory is used)
    m = parse_message(data)
    assert isinstance(m, Request)
    m.uri, m.top_via, m.from_, m.to, m.contacts  # noqa: B018
    caches = {c.name: c for c in wirecache.registered()}
    assert all(len(caches[name]) for name in WIRE_CACHES)
    wirecache.reset_all()
    for name in WIRE_CACHES - {"sip.header-names", "sip.header-keys", "sip.canonical-header-keys"}:
        assert len(caches[name]) == 0, name
    assert "X-Brought-By-A-Message" not in caches["sip.header-names"].entries
    assert "Call-ID" in caches["sip.header-names"].entries
    assert "Call-ID" in caches["sip.canonical-header-keys"].entries
    # Cold memories decide as warm ones do.
    assert parse_message(OK_200).serialize() is OK_200


def test_a_flood_of_distinct_texts_grows_no_memory_beyond_its_limit() -> None:
    """More distinct texts than any limit, through the parser and the accessors: every
    memory stays within its limit, and the usual message is still read the fast way."""
    caches = [c for c in wirecache.registered() if c.name in WIRE_CACHES]
    peak = dict.fromkeys((c.name for c in caches), 0)
    size = {c.name: len(c) for c in caches}
    emptied = set()
    for i in range(DEFAULT_LIMIT + 200):
        data = _flood_message(i)
        parse_message(data)  # (the careful path: it learns the unknown name)
        m = parse_message(data)  # the fast path: it learns the header layout
        assert isinstance(m, Request)
        m.uri, m.top_via, m.from_, m.to, m.contacts  # noqa: B018
        assert m.headers.get(f"X-Flood-{i}") == "1"
        for c in caches:
            peak[c.name] = max(peak[c.name], len(c))
            if len(c) < size[c.name]:
                emptied.add(c.name)
            size[c.name] = len(c)
    assert all(peak[c.name] <= c.limit for c in caches), peak
    # Each memory reached its limit and was emptied (so the bound was exercised).
    assert emptied == WIRE_CACHES
    ok = parse_message(OK_200)
    assert isinstance(ok, Response)
    assert ok.serialize() is OK_200
    wirecache.reset_all()


def _private_attribute_writes(path: Path) -> list[str]:
    """``obj._name = ...`` (or ``+=``) in *path* where *obj* is not ``self``/``cls``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and sub.attr.startswith("_")
                    and not (isinstance(sub.value, ast.Name) and sub.value.id in ("self", "cls"))
                ):
                    found.append(f"line {sub.lineno}: {ast.unparse(sub)}")
    return found


def test_the_parser_sets_no_private_field_and_bypasses_no_constructor() -> None:
    """Messages own their construction (Request/Response.from_wire): parser.py assigns
    no private attribute of another object and calls no ``__new__``."""
    path = Path(parser.__file__)
    assert _private_attribute_writes(path) == []
    assert "__new__" not in path.read_text()


def test_the_private_write_check_finds_a_private_write(tmp_path: Path) -> None:
    """(The check above can fail: it sees a write to another object's private field.)"""
    sample = tmp_path / "sample.py"
    sample.write_text("def f(msg):\n    msg._wire = None\n    self._ok = 1\n")
    assert _private_attribute_writes(sample) == ["line 2: msg._wire"]
