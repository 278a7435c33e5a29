"""
A call's trace as the web shows it (docs/web.md, "Call traces"): JSON for the ladder and
the API, text in the ``sipp -trace_msg`` style for pasting into a ticket, a pcap for
Wireshark, and why the call failed in plain words.

The pcap is written with ``dpkt`` (docs/calls.md says why): each message becomes one
Ethernet frame carrying IPv4 or IPv6 and UDP (or TCP, with sequence numbers per direction)
synthesized from the addresses recorded with it.
"""

from __future__ import annotations

import io
import ipaddress
from datetime import UTC, datetime

import attrs
import dpkt

from clicktodial.sip.message import reason_phrase
from clicktodial.store.traces import CallTrace, TracedMessage
from clicktodial.store.values import FINAL_STATES

__all__ = [
    "CallWording",
    "message_json",
    "message_label",
    "plain_reason",
    "trace_json",
    "trace_pcap",
    "trace_text",
]

#: The ladder's columns: where a message goes from and to.
DAEMON = "daemon"


@attrs.frozen
class CallWording:
    """The ``[calls]`` timers the plain-words reasons quote (seconds)."""

    ring_timeout: float = 30.0
    callee_ring_timeout: float = 60.0
    max_duration: float = 14400.0


def _seconds(value: float) -> str:
    return f"{value:g} s"


def _duration(value: float) -> str:
    whole = int(value)
    hours, rest = divmod(whole, 3600)
    if hours and not rest % 3600:
        return f"{hours} h"
    if whole >= 60 and not whole % 60:
        return f"{whole // 60} min"
    return _seconds(value)


def _status(status: int | None) -> str:
    if status is None:
        return ""
    phrase = reason_phrase(status)
    return f"{status} {phrase}".strip()


def plain_reason(*, caller: str, callee: str, state: str, end_reason: str | None,
                 sip_status: int | None, who_hung_up: str | None,
                 viewer: str | None, wording: CallWording) -> str | None:
    """
    Why the call ended, in words, as ``viewer`` (a username) reads it: "your phone" for
    their own phone, "bob's phone" for the other; None while the call is in progress.
    """
    if state not in FINAL_STATES or end_reason is None:
        return None

    def party(username: str) -> str:
        return "you" if username == viewer else username

    def phone(username: str) -> str:
        return "your phone" if username == viewer else f"{username}'s phone"

    status = _status(sip_status)
    role, _, outcome = end_reason.partition("-")
    if role in ("caller", "callee") and outcome:
        who = caller if role == "caller" else callee
        timeout = wording.ring_timeout if role == "caller" else wording.callee_ring_timeout
        if outcome == "hangup":
            text = f"{party(who)} hung up"
        elif outcome == "no-answer":
            if sip_status == 408 or sip_status is None:
                text = f"{phone(who)} did not answer within {_seconds(timeout)}"
            else:
                text = f"{phone(who)} was not answered ({status})"
        elif outcome == "busy":
            text = f"{phone(who)} answered {status}"
        elif outcome == "rejected":
            text = f"{phone(who)} declined the call ({status})"
        elif sip_status == 480:
            text = f"{phone(who)} is not registered: there was nothing to ring ({status})"
        else:
            text = f"{phone(who)} did not respond: it may be off or unreachable ({status})"
    elif end_reason == "cancelled":
        if who_hung_up in ("caller", "callee"):
            text = f"{party(caller if who_hung_up == 'caller' else callee)} cancelled the call"
        else:
            text = "the call was cancelled (by an administrator or at shutdown)"
    elif end_reason == "max-duration":
        text = f"the call reached the longest allowed duration ({_duration(wording.max_duration)})"
    elif end_reason == "timeout":
        if sip_status == 481:
            text = f"a phone no longer knew the call ({status})"
        else:
            text = f"a phone stopped responding ({status or '408 Request Timeout'})"
    elif end_reason == "error":
        if sip_status == 488:
            text = "the phones share no codec (488)"
        elif sip_status is not None:
            text = f"the phones could not be connected ({status})"
        else:
            text = "the phones could not be connected"
    elif end_reason == "lost":
        text = "the daemon running the call stopped during the call"
    elif end_reason == "media-relay-failed":
        text = "the media relay refused the call or did not answer"
    elif end_reason == "no-trunk":
        text = "no trunk is configured to call this number"
    elif end_reason == "refused":
        text = "the dial plan refused the number"
    else:
        text = f"the call ended: {end_reason}" + (f" ({status})" if status else "")
    return text[0].upper() + text[1:]


def message_label(data: bytes) -> str:
    """What an arrow says: the method of a request, the status and reason of a response."""
    line = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
    if line.startswith("SIP/"):
        return line.partition(" ")[2].strip()
    return line.partition(" ")[0]


def _iso_ms(at_ms: int) -> str:
    moment = datetime.fromtimestamp(at_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at_ms % 1000:03d}Z"


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def message_json(message: TracedMessage, index: int, first_ms: int) -> dict[str, object]:
    """One message as the API and the ladder show it."""
    peer = message.leg or "phone"
    outgoing = message.direction == "out"
    return {
        "index": index,
        "time_ms": message.at_ms - first_ms,
        "at": _iso_ms(message.at_ms),
        "direction": message.direction,
        "leg": message.leg,
        "from": DAEMON if outgoing else peer,
        "to": peer if outgoing else DAEMON,
        "label": message_label(message.data),
        "retransmission": message.retransmission,
        "transport": message.transport,
        "local": _host_port(message.local_host, message.local_port),
        "remote": _host_port(message.remote_host, message.remote_port),
        "sip_call_id": message.sip_call_id,
        "size": len(message.data),
        "message": message.data.decode("utf-8", "replace"),
    }


def trace_json(call_id: str, trace: CallTrace | None, *, caller: str, callee: str,
               reason: str | None) -> dict[str, object]:
    """The whole trace: the parties, why it ended, the messages, how many were dropped."""
    messages = trace.messages if trace is not None else ()
    first = messages[0].at_ms if messages else 0
    return {
        "call_id": call_id,
        "caller": caller,
        "callee": callee,
        "reason": reason,
        "started": _iso_ms(first) if messages else None,
        "dropped": trace.dropped if trace is not None else 0,
        "messages": [message_json(m, i, first) for i, m in enumerate(messages)],
    }


_RULE = "-" * 47


def trace_text(call_id: str, trace: CallTrace | None) -> str:
    """
    The trace as text, in the style of ``sipp -trace_msg`` (and sngrep's save as text): a
    rule with the time, a line saying what went where, the message.
    """
    out = [f"clicktodial call {call_id}"]
    messages = trace.messages if trace is not None else ()
    first = messages[0].at_ms if messages else 0
    for m in messages:
        local = _host_port(m.local_host, m.local_port)
        remote = _host_port(m.remote_host, m.remote_port)
        stamp = _iso_ms(m.at_ms).replace("T", " ").rstrip("Z")
        leg = f", {m.leg}'s leg" if m.leg else ""
        copy = ", retransmission" if m.retransmission else ""
        if m.direction == "out":
            what = (f"{m.transport} message sent ({len(m.data)} bytes) from {local}"
                    f" to {remote}{leg}{copy}:")
        else:
            what = (f"{m.transport} message received [{len(m.data)}] bytes from {remote}"
                    f" to {local}{leg}{copy}:")
        body = m.data.decode("utf-8", "replace").replace("\r\n", "\n")
        out += [f"{_RULE} {stamp} (+{(m.at_ms - first) / 1000:.3f} s)", what, "", body]
    dropped = trace.dropped if trace is not None else 0
    if dropped:
        out += [_RULE, f"{dropped} more message(s) not kept: the trace reached its bound"
                       " ([calls] trace_max_messages / trace_max_kb)."]
    return "\n".join(out).rstrip("\n") + "\n"


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        # Not an address (never recorded so by our transport): a documentation address.
        return ipaddress.ip_address("192.0.2.0")


def _packet(m: TracedMessage, tcp_sequence: dict[tuple[str, int, str, int], int]) -> bytes:
    local, remote = _address(m.local_host), _address(m.remote_host)
    if local.version != remote.version:
        # One IPv6 socket talking to IPv4 peers: show both as IPv6 (v4-mapped).
        local, remote = (ipaddress.IPv6Address(f"::ffff:{a}") if a.version == 4 else a
                         for a in (local, remote))
    src, dst = (local, remote) if m.direction == "out" else (remote, local)
    sport, dport = ((m.local_port, m.remote_port) if m.direction == "out"
                    else (m.remote_port, m.local_port))
    transport: dpkt.Packet
    if m.transport == "UDP":
        transport = dpkt.udp.UDP(sport=sport, dport=dport, data=m.data)
        transport.ulen = len(transport)
        protocol = dpkt.ip.IP_PROTO_UDP
    else:
        flow = (str(src), sport, str(dst), dport)
        seq = tcp_sequence.get(flow, 1)
        tcp_sequence[flow] = seq + len(m.data)
        transport = dpkt.tcp.TCP(sport=sport, dport=dport, seq=seq,
                                 flags=dpkt.tcp.TH_PUSH | dpkt.tcp.TH_ACK, data=m.data)
        protocol = dpkt.ip.IP_PROTO_TCP
    if src.version == 4:
        ip: dpkt.Packet = dpkt.ip.IP(src=src.packed, dst=dst.packed, p=protocol, ttl=64,
                                     data=transport)
        ether_type = dpkt.ethernet.ETH_TYPE_IP
    else:
        ip = dpkt.ip6.IP6(src=src.packed, dst=dst.packed, nxt=protocol, hlim=64,
                          data=transport, plen=len(transport))
        ether_type = dpkt.ethernet.ETH_TYPE_IP6
    frame = dpkt.ethernet.Ethernet(src=b"\x02\x00\x00\x00\x00\x01",
                                   dst=b"\x02\x00\x00\x00\x00\x02", type=ether_type, data=ip)
    return bytes(frame)


def trace_pcap(trace: CallTrace | None) -> bytes:
    """The trace as a classic pcap file (Ethernet link type), one frame per message."""
    out = io.BytesIO()
    writer = dpkt.pcap.Writer(out, snaplen=262144, linktype=dpkt.pcap.DLT_EN10MB)
    tcp_sequence: dict[tuple[str, int, str, int], int] = {}
    for m in trace.messages if trace is not None else ():
        writer.writepkt(_packet(m, tcp_sequence), ts=m.at_ms / 1000)
    return out.getvalue()
