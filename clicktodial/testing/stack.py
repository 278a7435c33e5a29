"""
What the daemon's whole SIP stack (:class:`clicktodial.sip.stack.SIPStack`) answers each
torture message of ``tests/data`` (INDEX.md), sent over UDP with a loopback top Via, by a
daemon whose domain is ``example.com`` (aliases ``127.0.0.1`` and ``2001:db8::10``): the
final status, or ``None`` for silence. Shared by the unit test on a fake reactor and the
interop test against the running daemon.
"""

from __future__ import annotations

__all__ = ["STACK_TORTURE_ANSWERS"]

STACK_TORTURE_ANSWERS: dict[str, int | None] = {
    # RFC 4475 §3.1.1: valid messages
    "rfc4475/wsinv.dat": 481,  # INVITE with a To tag: no such dialog (§12.2.2), never 400
    "rfc4475/intmeth.dat": 501,  # unknown method: 501 + Allow
    "rfc4475/esc01.dat": 403,  # INVITE: incoming calls are not served
    "rfc4475/dblreq.dat": 401,  # REGISTER (challenged); the trailing INVITE bytes ignored
    "rfc4475/unreason.dat": None,  # a response: never answered
    "rfc4475/noreason.dat": None,
    # RFC 4475 §3.1.2: invalid messages
    "rfc4475/badinv01.dat": 400,
    "rfc4475/clerr.dat": 400,  # UDP: Content-Length larger than the datagram
    "rfc4475/ncl.dat": 400,
    "rfc4475/scalarlg.dat": None,  # a response: dropped
    "rfc4475/lwsstart.dat": 400,
    "rfc4475/trws.dat": 400,
    "rfc4475/escruri.dat": 400,
    "rfc4475/baddate.dat": 403,  # Date is not used: an INVITE like any other
    "rfc4475/baddn.dat": 400,
    "rfc4475/mismatch02.dat": 400,  # CSeq method mismatch (INDEX: 501, or 400)
    "rfc4475/bigcode.dat": None,  # a response: dropped
    # RFC 4475 §3.2-3.4
    "rfc4475/badbranch.dat": 200,  # OPTIONS; the bare z9hG4bK branch falls back to §17.2.3
    "rfc4475/unkscm.dat": 416,
    "rfc4475/novelsc.dat": 416,
    "rfc4475/unksm2.dat": 400,  # REGISTER with a non-SIP To
    "rfc4475/bext01.dat": 420,
    "rfc4475/invut.dat": 415,
    "rfc4475/regaut01.dat": 401,  # unknown Authorization scheme: a Digest challenge
    "rfc4475/bcast.dat": None,  # a response: dropped, nothing sent to 255.255.255.255
    "rfc4475/zeromf.dat": 200,  # an endpoint ignores Max-Forwards: 0
    "rfc4475/cparam01.dat": 401,  # REGISTER: challenged (binding checked after auth)
    "rfc4475/cparam02.dat": 401,
    "rfc4475/regescrt.dat": 401,
    "rfc4475/sdp01.dat": 406,  # Accept without application/sdp
    "rfc4475/inv2543.dat": 400,  # RFC 2543 INVITE without Contact: 400 (INDEX: a policy)
    "rfc4475/test.dat": 400,  # no SIP-Version: malformed Request-Line
    # RFC 5118
    "rfc5118/ipv6-good": 401,  # REGISTER to [2001:db8::10] (an alias): challenged
    "rfc5118/port-unambiguous": 401,  # REGISTER
    "rfc5118/via-received-param-no-delim": 200,  # OPTIONS
    "rfc5118/ipv6-in-sdp": 403,  # INVITE
    "rfc5118/mult-ip-in-header": 481,  # BYE outside a dialog
    "rfc5118/ipv6-correct-abnf-2-colons": 200,  # OPTIONS
}
