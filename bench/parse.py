"""Messages parsed (and serialized) per second: clicktodial's SIP parser vs Twisted's.

Method
------
Three typical messages, as bytes: an INVITE with an SDP body (~900 bytes), the
200 OK answering it, and a REGISTER carrying a Digest Authorization header.
Each is turned into N variants with their own Via branch, tags and Call-ID
(as successive transactions and dialogs have), the start line, URIs, sent-by
and Contact staying the same (as they do for one UA). For each message, each
contender processes the same N variants in a tight loop, timed with
``time.perf_counter``; R rounds run the contenders in turn (interleaved, so
they share the machine's noise alike) and the best round of each is kept and
reported as messages/s. The ratios are of rates measured in the same run.

* ``twisted``: ``twisted.protocols.sip.MessagesParser``, fed the bytes with
  ``dataReceived`` then ``dataDone`` (what its DatagramProtocol does for each
  datagram); only ``messageReceived`` callbacks are counted, and the run is
  rejected if the count is not N. Twisted's parser splits the lines, splits
  each header at its colon and stores it, and reads Content-Length. It
  validates nothing: no SIP version, no header syntax, no mandatory fields.
* ``framing``: ``parse_message(data, validate=False)``: what Twisted's parser
  does and a little more: the start line split and its SIP version, method
  token or status code checked, every header line split at its colon with its
  name looked up (compact forms expanded, a name must be a token), bare CR/LF
  and the limits (64 KiB, 8 KiB line, 256 fields) checked, the body cut at
  Content-Length, which must match. No header value is checked.
* ``framing+ser``: the same, then ``.serialize()``.
* ``validated``: ``parse_message(data)``, what the daemon's transport calls
  for every datagram: the framing above plus ``validate_message``, the RFC 3261
  §8.2/§18 checks (Request-URI syntax, mandatory headers present and not
  repeated, the syntax of Via, From, To, Contact, Call-ID, CSeq, Max-Forwards).
* ``validated+ser``: the same, then ``.serialize()``.
* ``careful``: validated+ser forced through the parser's careful path
  (``parser._parse_careful``), the one a message takes when it is not written
  the common way (compact or lower-case names, folding, a Content-Length
  that differs from the body, a fault...): what such messages cost.
* ``+access``: validated, then read what a registrar/transaction layer reads
  (top Via branch, From tag, To, Call-ID, CSeq, Contact, Expires): Via and
  NameAddr objects built. It benefits from ``parse_uri`` keeping parsed URIs
  by text: the URIs repeat across variants, as AORs and contacts do.

How our side gets its rate (docs/sip-wire.md has the details): a message
written the way ``serialize()`` writes it (canonical header names, one
``Name: value`` per line, one Content-Length equal to the body) takes a fast
path that checks exactly what the careful path checks, and declines (to the
careful path, which then finds and names the fault) on anything else; tests
hold the two paths to the same result on the torture corpus and on generated
and damaged messages. The checks remember what they found well formed
(bounded memories): the start lines, the header layout (the names in order,
with where Content-Length and the checked fields are), Request-URIs, a Via
with its branch value left out, a From/To with its tag left out, the Contact.
Those are what the variants here share, and what a UA's successive messages
share; the branch, tags and Call-ID are new in every variant, so nothing is
served from a memory keyed by a whole message. ``serialize()`` of a parsed, unmodified
message returns the octets received (these messages are written as it would
write them); any change to the message makes it write the message anew.

The last two columns are ``framing+ser`` / ``twisted`` and ``validated+ser`` /
``twisted``. Run it from the checkout (or with the package installed), on a
machine as quiet as possible; on a busy one, prefer more, shorter rounds:

    PYTHONPATH=. python3 bench/parse.py            # default N=20000, R=5
    PYTHONPATH=. python3 bench/parse.py -n 4000 -r 25
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence

from twisted.protocols import sip as tsip

from clicktodial.sip import parser
from clicktodial.sip.parser import parse_message

SDP = (
    b"v=0\r\n"
    b"o=alice 2890844526 2890844526 IN IP4 192.0.2.10\r\n"
    b"s=-\r\n"
    b"c=IN IP4 192.0.2.10\r\n"
    b"t=0 0\r\n"
    b"m=audio 49170 RTP/AVP 0 8 101\r\n"
    b"a=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"a=fmtp:101 0-15\r\n"
    b"a=sendrecv\r\n"
)

INVITE = (
    b"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:alice@pc33.atlanta.example.com:5060;transport=udp>\r\n"
    b"Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY\r\n"
    b"Supported: replaces, timer\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Type: application/sdp\r\n"
    b"Content-Length: " + str(len(SDP)).encode() + b"\r\n"
    b"\r\n" + SDP
)

OK_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport=5060"
    b";received=192.0.2.10\r\n"
    b'To: "Bob" <sip:bob@biloxi.example.com>;tag=a6c85cf\r\n'
    b'From: "Alice" <sip:alice@atlanta.example.com>;tag=1928301774\r\n'
    b"Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n"
    b"CSeq: 314159 INVITE\r\n"
    b"Contact: <sip:bob@192.0.2.4:5060>\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

REGISTER = (
    b"REGISTER sip:registrar.example.com SIP/2.0\r\n"
    b"Via: SIP/2.0/UDP 192.0.2.55:5060;branch=z9hG4bKnashds7;rport\r\n"
    b"Max-Forwards: 70\r\n"
    b"To: <sip:1001@registrar.example.com>\r\n"
    b"From: <sip:1001@registrar.example.com>;tag=456248\r\n"
    b"Call-ID: 843817637684230@998sdasdh09\r\n"
    b"CSeq: 1827 REGISTER\r\n"
    b"Contact: <sip:1001@192.0.2.55:5060;transport=udp>;expires=3600\r\n"
    b'Authorization: Digest username="1001", realm="registrar.example.com", '
    b'nonce="ea9c8e88df84f1cec4341ae6cbe5a359", uri="sip:registrar.example.com", '
    b'response="dfe56131d1958046689d83306477ecc", algorithm=MD5, '
    b'cnonce="0a4f113b", qop=auth, nc=00000001\r\n'
    b"Expires: 3600\r\n"
    b"User-Agent: ExamplePhone/1.2.3\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)

MESSAGES = {"INVITE+SDP": INVITE, "200 OK": OK_200, "REGISTER+auth": REGISTER}

# The identifiers that differ between transactions and dialogs in real
# traffic; each timed message gets fresh values, so nothing can be served from
# a cache keyed by the exact text (the URIs, which do repeat, stay the same).
_VARYING = [
    b"z9hG4bK776asdhds",
    b"z9hG4bKnashds7",
    b"1928301774",
    b"456248",
    b"a84b4c76e66710",
    b"843817637684230",
    b"a6c85cf",
]


def variants(data: bytes, count: int) -> list[bytes]:
    """*count* copies of *data*, each with its own branch, tags and Call-ID."""
    out = []
    for i in range(count):
        v = data
        for token in _VARYING:
            v = v.replace(token, token[:-4] + b"%04x" % (i % 65536))
        out.append(v)
    return out


Runner = Callable[[list[bytes]], None]


def run_twisted(datas: list[bytes]) -> None:
    count = 0

    def received(message: object) -> None:
        nonlocal count
        count += 1

    for data in datas:
        # A fresh parser per datagram, as twisted.protocols.sip.Base does.
        parser = tsip.MessagesParser(received)
        parser.dataReceived(data)
        parser.dataDone()
    if count != len(datas):
        raise RuntimeError(f"twisted parsed {count} of {len(datas)} messages")


def run_framing(datas: list[bytes]) -> None:
    for data in datas:
        parse_message(data, validate=False)


def run_framing_serialize(datas: list[bytes]) -> None:
    for data in datas:
        parse_message(data, validate=False).serialize()


def run_validated(datas: list[bytes]) -> None:
    for data in datas:
        parse_message(data)


def run_validated_serialize(datas: list[bytes]) -> None:
    for data in datas:
        parse_message(data).serialize()


def run_careful(datas: list[bytes]) -> None:
    for data in datas:
        parser._parse_careful(data, False, True).serialize()


def run_access(datas: list[bytes]) -> None:
    for data in datas:
        m = parse_message(data)
        m.top_via.branch  # noqa: B018
        m.from_.tag  # noqa: B018
        m.to.tag  # noqa: B018
        m.call_id  # noqa: B018
        m.cseq  # noqa: B018
        m.contacts  # noqa: B018
        m.expires  # noqa: B018


def best_rates(contenders: Sequence[Runner], datas: list[bytes], repeats: int) -> list[float]:
    """Messages/s of each contender: best of *repeats* rounds, contenders interleaved.

    Interleaving gives every contender the same share of whatever else the
    machine is doing at the time.
    """
    best = [float("inf")] * len(contenders)
    for _ in range(repeats):
        for i, fn in enumerate(contenders):
            t0 = time.perf_counter()
            fn(datas)
            best[i] = min(best[i], time.perf_counter() - t0)
    return [len(datas) / t for t in best]


LEGEND = """\
twisted        twisted.protocols.sip.MessagesParser: lines and headers split, NO validation
framing        parse_message(validate=False): start line, header names, limits, Content-Length
framing+ser    the same, then serialize()
validated      parse_message(): framing + RFC 3261 §8.2/§18 checks (the daemon's path)
validated+ser  the same, then serialize()
careful        validated+ser through the careful path (messages not written the usual way)
+access        validated, then Via/From/To/Call-ID/CSeq/Contact/Expires read as objects
ratios: framing+ser / twisted and validated+ser / twisted, same run"""


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("-n", type=int, default=20000, help="messages per timed run")
    ap.add_argument("-r", type=int, default=5, help="timed rounds; the best is kept")
    args = ap.parse_args()
    print(LEGEND)
    print(f"N={args.n} variants per message, best of R={args.r} interleaved rounds\n")
    cols = ("twisted", "framing", "framing+ser", "validated", "validated+ser", "careful", "+access")
    ratios = f"{'fr+ser/tw':>11}{'val+ser/tw':>11}"
    print(f"{'message':<14}" + "".join(f"{c:>14}" for c in cols) + ratios)
    contenders = [
        run_twisted,
        run_framing,
        run_framing_serialize,
        run_validated,
        run_validated_serialize,
        run_careful,
        run_access,
    ]
    for name, data in MESSAGES.items():
        rates = best_rates(contenders, variants(data, args.n), args.r)
        tw = rates[0]
        print(
            f"{name:<14}"
            + "".join(f"{r:>12,.0f}/s" for r in rates)
            + f"{rates[2] / tw:>10.2f}x{rates[4] / tw:>10.2f}x"
        )


if __name__ == "__main__":
    main()
