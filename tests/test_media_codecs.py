"""G.711 µ-law and A-law: known code words, monotonicity, round trips."""

import pytest

from clicktodial.media.codecs import (
    Codec,
    alaw_decode,
    alaw_encode,
    alaw_to_linear,
    decode,
    encode,
    linear_to_alaw,
    linear_to_ulaw,
    ulaw_decode,
    ulaw_encode,
    ulaw_to_linear,
)


@pytest.mark.parametrize(
    ("sample", "code"),
    [
        (0, 0xFF),  # µ-law silence is all ones (G.711 inverts the code word)
        (-1, 0x7F),
        (32767, 0x80),
        (-32768, 0x00),
        (32635, 0x80),  # the clip level
    ],
)
def test_ulaw_known_code_words(sample: int, code: int) -> None:
    """µ-law encodes 0 as 0xFF, -1 as 0x7F and full scale as 0x80 / 0x00."""
    assert linear_to_ulaw(sample) == code
    assert ulaw_encode([sample]) == bytes([code])


@pytest.mark.parametrize(
    ("sample", "code"),
    [(0, 0xD5), (-1, 0x55), (32767, 0xAA), (-32768, 0x2A), (8, 0xD5), (16, 0xD4)],
)
def test_alaw_known_code_words(sample: int, code: int) -> None:
    """A-law encodes 0 as 0xD5 (even bits inverted), -1 as 0x55, full scale as 0xAA / 0x2A."""
    assert linear_to_alaw(sample) == code
    assert alaw_encode([sample]) == bytes([code])


def test_decoders_known_values() -> None:
    """The decoders give the middle of each code's interval (G.711 Tables 1 and 2)."""
    assert ulaw_to_linear(0xFF) == 0
    assert ulaw_to_linear(0x7F) == 0
    assert ulaw_to_linear(0x80) == 32124
    assert ulaw_to_linear(0x00) == -32124
    assert alaw_to_linear(0xD5) == 8
    assert alaw_to_linear(0x55) == -8
    assert alaw_to_linear(0xAA) == 32256
    assert alaw_to_linear(0x2A) == -32256


@pytest.mark.parametrize("codec", list(Codec))
def test_round_trip_within_quantisation_error(codec: Codec) -> None:
    """Every 16-bit sample decodes back within half its segment's step (a relative error)."""
    samples = list(range(-32768, 32768))
    decoded = decode(codec, encode(codec, samples))
    for sample, back in zip(samples, decoded, strict=True):
        magnitude = min(abs(sample), 32635 if codec is Codec.PCMU else 32767)
        # Each segment doubles the step: half a step is at most 1/16 of the segment's lowest
        # magnitude, plus one smallest step near zero, plus what the clip level cuts off.
        bound = magnitude / 16 + 16 + abs(sample) - magnitude
        assert abs(back - sample) <= bound, (sample, back)


@pytest.mark.parametrize("codec", list(Codec))
def test_decoding_is_monotonic_in_the_input(codec: Codec) -> None:
    """A larger input never decodes smaller (no wrapped segments)."""
    decoded = decode(codec, encode(codec, range(-32768, 32768, 7)))
    assert decoded == sorted(decoded)


@pytest.mark.parametrize("codec", list(Codec))
def test_every_code_word_decodes_to_itself(codec: Codec) -> None:
    """Encoding a decoded value gives the same code word back (except µ-law's -0, 0x7F)."""
    for code in range(256):
        if codec is Codec.PCMU and code == 0x7F:
            continue  # µ-law has two zeros; 0 encodes as +0 (0xFF)
        assert encode(codec, [decode(codec, bytes([code]))[0]]) == bytes([code])


def test_out_of_range_sample_is_refused() -> None:
    """A sample outside 16 bits is a ValueError, not a silently wrapped value."""
    with pytest.raises(ValueError, match="32768"):
        ulaw_encode([32768])
    with pytest.raises(ValueError, match="-32769"):
        alaw_encode([-32769])


def test_payload_types() -> None:
    """PCMU is static payload type 0 and PCMA 8 (RFC 3551 Table 4); others are refused."""
    assert Codec.PCMU.payload_type == 0
    assert Codec.PCMA.payload_type == 8
    assert Codec.from_payload_type(8) is Codec.PCMA
    with pytest.raises(ValueError, match="not G.711"):
        Codec.from_payload_type(18)


def test_decode_helpers() -> None:
    """ulaw_decode / alaw_decode decode whole payloads."""
    assert ulaw_decode(b"\xff\x80") == [0, 32124]
    assert alaw_decode(b"\xd5\xaa") == [8, 32256]
