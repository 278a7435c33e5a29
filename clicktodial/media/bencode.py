"""
Bencoding (the BitTorrent encoding), as rtpengine's ``ng`` control protocol
uses it: byte strings, integers, lists and dictionaries.

Written here rather than taken from PyPI (docs/media.md, "Why our own
bencode"): the maintained, typed library (``fastbencode``) refuses
dictionaries whose keys are not sorted, and rtpengine 10.5 replies
``d3:sdp...6:result2:oke`` (``sdp`` before ``result``); the others are
untyped or unmaintained.  Decoding is strict otherwise (no leading zeros, no
``-0``, nothing after the value, bounded nesting) and raises only
:class:`ValueError`, so a garbage datagram is dropped by the caller.

Dictionary keys are decoded as ASCII text; values stay bytes.  Pure: no
Twisted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = ["Bencodable", "bdecode", "bencode"]

Bencodable = bytes | str | int | Sequence["Bencodable"] | Mapping[str, "Bencodable"]

#: Deepest nesting accepted when decoding (rtpengine's replies nest about 8 deep).
MAX_DEPTH = 32


def bencode(value: Bencodable) -> bytes:
    """``value`` bencoded; ``str`` is sent as UTF-8, dictionary keys sorted."""
    out: list[bytes] = []
    _encode(value, out)
    return b"".join(out)


def _encode(value: Bencodable, out: list[bytes]) -> None:
    if isinstance(value, str):
        value = value.encode("utf-8")
    if isinstance(value, bytes):
        out += [str(len(value)).encode(), b":", value]
    elif isinstance(value, bool):
        raise TypeError("bencode has no booleans")
    elif isinstance(value, int):
        out.append(b"i%de" % value)
    elif isinstance(value, Mapping):
        out.append(b"d")
        for key in sorted(value):
            _encode(key, out)
            _encode(value[key], out)
        out.append(b"e")
    else:
        out.append(b"l")
        for item in value:
            _encode(item, out)
        out.append(b"e")


def bdecode(data: bytes) -> object:
    """
    The value ``data`` encodes: bytes, int, list or dict (str keys).

    :raises ValueError: ``data`` is not exactly one bencoded value.
    """
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[object, int]:
    if depth > MAX_DEPTH:
        raise ValueError("nested too deep")
    if at >= len(data):
        raise ValueError("truncated")
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.find(b"e", at)
        digits = data[at + 1 : end] if end > 0 else b""
        if not _is_integer(digits):
            raise ValueError(f"bad integer at {at}")
        return int(digits), end + 1
    if kind == b"l" or kind == b"d":
        items: list[object] = []
        at += 1
        while at < len(data) and data[at : at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        if at >= len(data):
            raise ValueError("truncated")
        if kind == b"l":
            return items, at + 1
        if len(items) % 2:
            raise ValueError("dictionary key without a value")
        # Keys in any order (rtpengine does not sort them); the last of a repeated key wins.
        result: dict[str, object] = {}
        for key, value in zip(items[::2], items[1::2], strict=True):
            if not isinstance(key, bytes):
                raise ValueError("dictionary keys must be strings")
            result[key.decode("ascii")] = value
        return result, at + 1
    colon = data.find(b":", at)
    digits = data[at:colon] if colon > 0 else b""
    if not digits.isdigit() or (digits[:1] == b"0" and len(digits) > 1):
        raise ValueError(f"bad string length at {at}")
    end = colon + 1 + int(digits)
    if end > len(data):
        raise ValueError("truncated")
    return data[colon + 1 : end], end


def _is_integer(digits: bytes) -> bool:
    body = digits[1:] if digits[:1] == b"-" else digits
    return (
        body.isdigit()
        and body.isascii()
        and not (body[:1] == b"0" and len(body) > 1)
        and digits != b"-0"
    )
