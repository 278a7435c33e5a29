"""
The parser's fast path (``parser._fast_parse``) against its careful path
(``parser._parse_careful``): whenever the fast path returns a message, the
careful path returns the same message (fields, names as received, body, cached
CSeq, kept octets); whenever the careful path rejects a message, the fast path
declines it. Checked on the torture corpus, on generated messages, on those
messages damaged at random, and on the benchmark's messages.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clicktodial.sip import message as message_module
from clicktodial.sip import parser
from clicktodial.sip.message import Request, Response
from clicktodial.sip.parser import MAX_MESSAGE, MessageParseError, StreamParser, parse_message

ROOT = Path(__file__).resolve().parent.parent.parent
CORPUS = sorted(p.read_bytes() for p in (ROOT / "tests" / "data").glob("rfc*/*"))
sys.path.insert(0, str(ROOT / "bench"))
try:
    import parse as bench_parse  # bench/parse.py
finally:
    sys.path.remove(str(ROOT / "bench"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    from test_roundtrip_hypothesis import messages
finally:
    sys.path.pop(0)


def fast(data: bytes, validate: bool, end: int) -> Request | Response | None:
    """What the fast path makes of *data* with its header block ending at *end*."""
    if end <= 0 or len(data) > MAX_MESSAGE or data.startswith(b"\r\n"):
        return None
    return parser._fast_parse(data, parser._decode(data[:end]), end + 4, validate)


def check_agreement(data: bytes) -> bool:
    """Assert the fast path agrees with the careful path; whether it took *data*.

    The fast path is tried with the header block ending at the last empty line
    (what parse_message does) and at the first (what StreamParser does).
    """
    took = False
    for validate, end in [
        (validate, end)
        for validate in (True, False)
        for end in {data.find(b"\r\n\r\n"), data.rfind(b"\r\n\r\n")}
    ]:
        quick = fast(data, validate, end)
        for stream in (False, True):
            try:
                careful = parser._parse_careful(data, stream, validate)
            except MessageParseError as e:
                assert quick is None, (data, e.reason)
                continue
            if quick is None:
                continue
            took = True
            assert type(quick) is type(careful)
            # (Not ==, which parses the Request-URI: the start lines are compared below.)
            assert quick._same_content(careful)
            h, c = quick.headers, careful.headers
            assert (h._keys, h._names, h._values) == (c._keys, c._names, c._values)
            assert h._cache == c._cache
            # The octets are kept by both (as what serialize() writes) or by neither.
            assert h._pristine is c._pristine and quick._wire is careful._wire
            assert quick._wire is None or quick._wire is data
            assert quick.body == careful.body
            if isinstance(quick, Request):
                assert isinstance(careful, Request)
                assert (quick.method, quick._uri_text) == (careful.method, careful._uri_text)
            else:
                assert isinstance(careful, Response)
                assert (quick.status, quick.reason) == (careful.status, careful.reason)
    return took


@pytest.mark.parametrize("index", range(len(CORPUS)))
def test_torture_message_gets_the_same_from_both_paths(index: int) -> None:
    """Every archived torture message: accepted alike, or declined by the fast path."""
    check_agreement(CORPUS[index])


@pytest.mark.parametrize("name", sorted(bench_parse.MESSAGES))
def test_benchmark_messages_take_the_fast_path(name: str) -> None:
    """The benchmark's messages (typical traffic) are the fast path's case."""
    for data in bench_parse.variants(bench_parse.MESSAGES[name], 3):
        assert check_agreement(data)
        assert parse_message(data).serialize() is data
        stream = StreamParser().feed(data)
        assert stream == [parse_message(data)]
        assert stream[0]._wire is not None and stream[0].serialize() == data


@settings(max_examples=300, deadline=None)
@given(messages)
def test_generated_message_gets_the_same_from_both_paths(m: Request | Response) -> None:
    """A serialized message: what the fast path returns is what the careful path returns."""
    check_agreement(m.serialize())


DAMAGE = b'\x00\r\n \t:;,<>"\\%@=?[]/\xff-.aZ0'


@pytest.mark.parametrize("padding", ["  ", "\t", " \t ", "   "])
def test_a_padded_content_length_takes_the_fast_path_without_keeping_the_octets(
    padding: str,
) -> None:
    """SIPp writes "Content-Length:   115": such a message is read the fast way, as the
    careful path reads it, and serialize() writes the number without the padding."""
    body = b"v=0\r\n"
    data = bench_parse.OK_200.replace(
        b"Content-Length: 0", b"Content-Length:" + padding.encode() + b"%d" % len(body)
    )
    data += body
    assert data != bench_parse.OK_200 + body
    for end in (data.find(b"\r\n\r\n"), data.rfind(b"\r\n\r\n")):
        assert fast(data, True, end) is not None
    assert check_agreement(data)
    m = parse_message(data)
    assert m.body == body and m._wire is None
    assert (
        m.serialize()
        == bench_parse.OK_200.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
        + body
    )


def test_blank_line_in_the_body_is_left_to_the_careful_path() -> None:
    """A body with an empty line in it: the last empty line is not the header block's end."""
    body = b"--b\r\n\r\npart\r\n\r\n--b--\r\n"
    data = bench_parse.OK_200.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body))
    data += body
    assert fast(data, True, data.rfind(b"\r\n\r\n")) is None
    m = parse_message(data)
    assert m.body == body and m.serialize() is data
    assert check_agreement(data)


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([*CORPUS, *bench_parse.MESSAGES.values()]), st.data())
def test_damaged_message_is_declined_when_the_careful_path_rejects_it(
    message: bytes, data: st.DataObject
) -> None:
    """Corrupt a message anywhere: the fast path never accepts what the careful path rejects."""
    damaged = bytearray(message)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete"]))
        at = data.draw(st.integers(0, max(0, len(damaged) - 1)))
        if op == "flip" and damaged:
            damaged[at] = data.draw(st.sampled_from(DAMAGE))
        elif op == "insert":
            damaged[at:at] = data.draw(
                st.sampled_from([b"\r\n", b" ", b";", b",", b"\r\n ", b"\r", b"\n", b":", b"0"])
            )
        elif damaged:
            del damaged[at]
    check_agreement(bytes(damaged))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(bench_parse.MESSAGES)), st.data())
def test_benchmark_message_with_any_field_changed_gets_the_same_from_both_paths(
    name: str, data: st.DataObject
) -> None:
    """One header line of a typical message rewritten: both paths agree."""
    message = bench_parse.MESSAGES[name]
    end = message.index(b"\r\n\r\n")
    lines = message[:end].split(b"\r\n")
    i = data.draw(st.integers(0, len(lines) - 1))
    text = data.draw(st.text(st.sampled_from(DAMAGE.decode("latin-1")), max_size=6))
    at = data.draw(st.integers(0, len(lines[i])))
    lines[i] = lines[i][:at] + text.encode("latin-1") + lines[i][at:]
    check_agreement(b"\r\n".join(lines) + message[end:])


def _edits() -> list[tuple[str, int, str]]:
    out = []
    for name, message in sorted(bench_parse.MESSAGES.items()):
        count = message[: message.index(b"\r\n\r\n")].count(b"\r\n") + 1
        for i in range(count):
            for edit in (
                "duplicate",
                "remove",
                "lower",
                "fold",
                "tab",
                "space-before-colon",
                "no-space",
                "trailing-space",
                "empty-value",
            ):
                out.append((name, i, edit))
    return out


@pytest.mark.parametrize(("name", "index", "edit"), _edits())
def test_line_edit_gets_the_same_from_both_paths(name: str, index: int, edit: str) -> None:
    """Each line of a typical message duplicated, removed, respelled, folded...: both
    paths agree (a repeated Content-Length, From..., a compact or lower-case name, a
    fold: the fast path declines)."""
    message = bench_parse.MESSAGES[name]
    end = message.index(b"\r\n\r\n")
    lines = message[:end].split(b"\r\n")
    line = lines[index]
    name_part, colon, value = line.partition(b":")
    if edit == "duplicate":
        lines.insert(index, line)
    elif edit == "remove":
        del lines[index]
    elif edit == "lower":
        lines[index] = name_part.lower() + colon + value
    elif edit == "fold":
        lines[index : index + 1] = [name_part + colon, b" " + value.lstrip()]
    elif edit == "tab":
        lines[index] = line.replace(b" ", b"\t", 1)
    elif edit == "space-before-colon":
        lines[index] = name_part + b" " + colon + value
    elif edit == "no-space":
        lines[index] = name_part + colon + value.lstrip()
    elif edit == "trailing-space":
        lines[index] = line + b" "
    else:
        lines[index] = name_part + colon
    check_agreement(b"\r\n".join(lines) + message[end:])


def test_remembered_header_layout_is_a_fresh_layout_of_its_names() -> None:
    """The header-layout memory, after typical and edited messages, holds for each
    list of names what working it out afresh gives (keys, the one Content-Length,
    the checked fields), and only for names spelled as serialize() writes them."""
    for message in bench_parse.MESSAGES.values():
        end = message.index(b"\r\n\r\n")
        lines = message[:end].split(b"\r\n")
        check_agreement(message)
        check_agreement(b"\r\n".join([lines[0], *reversed(lines[1:])]) + message[end:])
        check_agreement(b"\r\n".join([*lines, b"Content-Length: 0"]) + message[end:])
    assert parser._NAME_LAYOUTS
    for joined, layout in parser._NAME_LAYOUTS.items():
        names = joined.split(":") if joined else []  # (a message without header fields)
        assert layout == parser._name_layout(names)
        assert all(name in message_module._CANONICAL_KEY_OF for name in names)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        # Same names in the same order, but a line without its colon.
        (b"Content-Length: 0", b"Content-Length 0"),
        # A second Content-Length: the remembered layout has none to check.
        (b"Content-Length: 0", b"Content-Length: 0\r\nContent-Length: 0"),
        # A name spelled another way than serialize() writes it.
        (b"Call-ID:", b"call-id:"),
    ],
)
def test_remembered_layout_does_not_serve_other_names(old: bytes, new: bytes) -> None:
    """A 200 OK whose names differ from a remembered layout's only slightly is
    declined by the fast path; the careful path decides it."""
    ok = bench_parse.OK_200
    assert parse_message(ok).serialize() is ok  # its layout is now remembered
    data = ok.replace(old, new)
    assert fast(data, True, data.rfind(b"\r\n\r\n")) is None
    assert fast(data, False, data.rfind(b"\r\n\r\n")) is None
    check_agreement(data)


@pytest.mark.parametrize(
    ("old", "new", "detail"),
    [
        (b"branch=z9hG4bK776asdhds;", b'branch=z9hG4bK776"asdhds;', "Invalid Via header"),
        (b"tag=a6c85cf", b"tag=a6c<85cf", "Invalid To header"),
        (b"tag=1928301774", b"tag=19283017 74", "Invalid From header"),
        (b"<sip:bob@192.0.2.4:5060>", b"<sip:bob@192.0.2.4:5060", "Invalid Contact header"),
    ],
)
def test_remembered_shape_does_not_vouch_for_another_value(
    old: bytes, new: bytes, detail: str
) -> None:
    """A Via/From/To/Contact whose shape is remembered, with the branch or tag
    value (or the text) changed to something the grammar refuses: rejected."""
    ok = bench_parse.OK_200
    parse_message(ok)  # its shapes are now remembered
    data = ok.replace(old, new)
    assert data != ok
    with pytest.raises(MessageParseError) as e:
        parse_message(data)
    assert e.value.detail == detail
    assert fast(data, True, data.rfind(b"\r\n\r\n")) is None
