"""
G.711 µ-law and A-law (ITU-T G.711), in pure Python.

Encoding is a lookup in a 65,536-entry table indexed by the 16-bit sample,
built once on first use from the bit-level algorithm of the reference
implementation (the segment/mantissa code of G.711 §§2-3, as in Sun's
public-domain ``g711.c``).  The media engine encodes each tone or file once
and keeps the bytes (see :mod:`clicktodial.media.tones`), so the per-sample
cost does not matter at send time.

``audioop`` is not used: it is deprecated and gone in Python 3.13.

This module is pure: no Twisted imports.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable

__all__ = [
    "Codec",
    "alaw_decode",
    "alaw_encode",
    "decode",
    "encode",
    "linear_to_alaw",
    "linear_to_ulaw",
    "alaw_to_linear",
    "ulaw_to_linear",
    "ulaw_decode",
    "ulaw_encode",
]

# µ-law: the magnitude is biased by 0x84 so that segment boundaries fall on powers of two;
# samples are clipped to 32635 so that adding the bias cannot overflow 15 bits.
_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


class Codec(enum.Enum):
    """A G.711 variant, with its static RTP payload type (RFC 3551 §6, Table 4)."""

    PCMU = 0
    PCMA = 8

    @property
    def payload_type(self) -> int:
        """The static RTP payload type number."""
        return self.value

    @property
    def encoding_name(self) -> str:
        """The SDP ``a=rtpmap`` encoding name (RFC 3551 §6)."""
        return self.name

    @classmethod
    def from_payload_type(cls, payload_type: int) -> Codec:
        """The codec of a static payload type; ``ValueError`` for anything but 0 and 8."""
        try:
            return cls(payload_type)
        except ValueError:
            raise ValueError(
                f"payload type {payload_type} is not G.711 (0 PCMU or 8 PCMA)"
            ) from None


def linear_to_ulaw(sample: int) -> int:
    """One signed 16-bit sample to its µ-law byte (0 → 0xFF, 32767 → 0x80, -32768 → 0x00)."""
    sign = 0x80 if sample < 0 else 0
    magnitude = min(-sample if sign else sample, _ULAW_CLIP) + _ULAW_BIAS
    exponent = (magnitude >> 7).bit_length() - 1
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    # G.711: the code word is sent inverted (even bits and sign), hence the complement.
    return ~(sign | (exponent << 4) | mantissa) & 0xFF


def ulaw_to_linear(code: int) -> int:
    """One µ-law byte to the signed 16-bit sample at the middle of its interval."""
    code = ~code & 0xFF
    magnitude = (((code & 0x0F) << 3) + _ULAW_BIAS) << ((code & 0x70) >> 4)
    return _ULAW_BIAS - magnitude if code & 0x80 else magnitude - _ULAW_BIAS


# A-law segment ends for the 13-bit magnitude.
_ALAW_SEGMENT_ENDS = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)


def linear_to_alaw(sample: int) -> int:
    """One signed 16-bit sample to its A-law byte (0 → 0xD5, 32767 → 0xAA, -32768 → 0x2A)."""
    value = sample >> 3  # A-law works on 13 bits
    if value >= 0:
        mask = 0xD5  # sign bit set, even bits inverted (G.711 §3)
    else:
        mask = 0x55
        value = -value - 1
    segment = next((i for i, end in enumerate(_ALAW_SEGMENT_ENDS) if value <= end), 8)
    if segment >= 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> (1 if segment < 2 else segment)) & 0x0F
    return code ^ mask


def alaw_to_linear(code: int) -> int:
    """One A-law byte to the signed 16-bit sample at the middle of its interval."""
    code ^= 0x55
    magnitude = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        magnitude += 8
    else:
        magnitude = (magnitude + 0x108) << (segment - 1)
    return magnitude if code & 0x80 else -magnitude


@functools.cache
def _encode_table(codec: Codec) -> bytes:
    # Indexed by the sample as an unsigned 16-bit number (two's complement).
    encode_one = linear_to_ulaw if codec is Codec.PCMU else linear_to_alaw
    return bytes(encode_one(i - 65536 if i >= 32768 else i) for i in range(65536))


@functools.cache
def _decode_table(codec: Codec) -> tuple[int, ...]:
    decode_one = ulaw_to_linear if codec is Codec.PCMU else alaw_to_linear
    return tuple(decode_one(code) for code in range(256))


def encode(codec: Codec, samples: Iterable[int]) -> bytes:
    """
    Signed 16-bit samples to G.711 bytes, one byte a sample.

    :raises ValueError: a sample is outside -32768..32767.
    """
    table = _encode_table(codec)
    try:
        return bytes(
            table[s & 0xFFFF] if -32768 <= s <= 32767 else _out_of_range(s) for s in samples
        )
    except TypeError:
        raise ValueError("samples must be integers") from None


def _out_of_range(sample: int) -> int:
    raise ValueError(f"sample {sample} is outside the 16-bit range -32768..32767")


def decode(codec: Codec, data: bytes) -> list[int]:
    """G.711 bytes to signed 16-bit samples."""
    table = _decode_table(codec)
    return [table[b] for b in data]


def ulaw_encode(samples: Iterable[int]) -> bytes:
    """Signed 16-bit samples to µ-law bytes."""
    return encode(Codec.PCMU, samples)


def ulaw_decode(data: bytes) -> list[int]:
    """µ-law bytes to signed 16-bit samples."""
    return decode(Codec.PCMU, data)


def alaw_encode(samples: Iterable[int]) -> bytes:
    """Signed 16-bit samples to A-law bytes."""
    return encode(Codec.PCMA, samples)


def alaw_decode(data: bytes) -> list[int]:
    """A-law bytes to signed 16-bit samples."""
    return decode(Codec.PCMA, data)
