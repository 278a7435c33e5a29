"""
Banned sources dropped by the kernel: a classic BPF socket filter (Linux ``SO_ATTACH_FILTER``)
on the UDP socket that refuses datagrams from the sources the per-source rate limit banned.

Why: a flood from one address can outrun what the daemon reads. Then the socket's receive
buffer stays full and the kernel drops the phones' datagrams as often as the flooder's.
Dropping a banned source's datagram in user space costs a ``recvfrom`` and a dictionary
look-up (~2 µs here); with the filter, the kernel drops it before it is queued (in the
sender's context on loopback, in the receive softirq otherwise): it takes no buffer space
and no daemon CPU.

The program (``sock_filter`` instructions) reads the source address at ``SKF_NET_OFF`` (the
network header, whichever layer the socket's filter starts at), checks the IP version (a
dual-stack socket gets IPv4 packets too), and compares it with each banned IPv4 address or
IPv6 network (prefix bits masked). At most :data:`MAX_SOURCES` sources go in (the kernel
takes 4,096 instructions); the others are dropped in user space all the same.

Pure: no Twisted imports.
"""

from __future__ import annotations

import ctypes
import ipaddress
import socket
import struct
from collections.abc import Iterable

__all__ = ["MAX_SOURCES", "attach", "detach", "program"]

#: Most banned sources put in the kernel filter (an IPv6 /64 takes 5 instructions).
MAX_SOURCES = 700

# linux/filter.h, linux/bpf_common.h
_LD, _ALU, _JMP, _RET = 0x00, 0x04, 0x05, 0x06
_W, _B, _ABS = 0x00, 0x10, 0x20
_JA, _JEQ, _AND, _K = 0x00, 0x10, 0x50, 0x00
_NET = -0x100000  # SKF_NET_OFF: offsets from the network header
_ACCEPT = 0xFFFFFFFF  # keep the whole packet
_DROP = 0
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_DETACH_FILTER = getattr(socket, "SO_DETACH_FILTER", 27)

Instruction = tuple[int, int, int, int]  # code, jt, jf, k


def _ld_word(offset: int) -> Instruction:
    return (_LD | _W | _ABS, 0, 0, (_NET + offset) & 0xFFFFFFFF)


def _entry(loads: list[tuple[int, int, int]]) -> list[Instruction]:
    """Compare (offset, mask, value) words; all equal: drop; else go past the entry."""
    code: list[Instruction] = []
    for offset, mask, value in loads:
        code.append(_ld_word(offset))
        if mask != 0xFFFFFFFF:
            code.append((_ALU | _AND | _K, 0, 0, mask))
        code.append((_JMP | _JEQ | _K, 0, 0, value))
    code.append((_RET | _K, 0, 0, _DROP))
    # Each jeq's "false" skips what is left of the entry (the drop included).
    return [
        (c, jt, len(code) - i - 1 if c == _JMP | _JEQ | _K else jf, k)
        for i, (c, jt, jf, k) in enumerate(code)
    ]


def _words(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network, at: int
) -> list[tuple[int, int, int]]:
    """The (offset, mask, value) words a source address must match to be in ``network``."""
    data = network.network_address.packed
    mask = network.netmask.packed
    words = []
    for i in range(0, len(data), 4):
        m = int.from_bytes(mask[i : i + 4], "big")
        if m:
            words.append((at + i, m, int.from_bytes(data[i : i + 4], "big")))
    return words


def program(sources: Iterable[str]) -> list[Instruction]:
    """
    The filter dropping datagrams from ``sources`` (IPv4 addresses, IPv6 addresses or
    networks such as ``2001:db8::/64``; anything else is ignored), the first
    :data:`MAX_SOURCES` of them; every other datagram is accepted.
    """
    v4: list[Instruction] = []
    v6: list[Instruction] = []
    for source in list(sources)[:MAX_SOURCES]:
        try:
            network = ipaddress.ip_network(source, strict=False)
        except ValueError:
            continue
        if network.version == 4:
            v4 += _entry(_words(network, 12))  # IPv4 source address: header bytes 12-15
        else:
            v6 += _entry(_words(network, 8))  # IPv6 source address: header bytes 8-23
    accept = (_RET | _K, 0, 0, _ACCEPT)
    # A = the version nibble; IPv4 goes to its own list, IPv6 (anything else) falls through.
    head: list[Instruction] = [
        (_LD | _B | _ABS, 0, 0, _NET & 0xFFFFFFFF),
        (_ALU | _AND | _K, 0, 0, 0xF0),
        (_JMP | _JEQ | _K, 0, 1, 0x40),
        (_JMP | _JA, 0, 0, len(v6) + 1),  # past the IPv6 list and its accept
    ]
    return head + v6 + [accept] + v4 + [accept]


def attach(sock: socket.socket, instructions: list[Instruction]) -> None:
    """
    Put ``instructions`` on ``sock`` (replacing any filter: the kernel swaps it atomically).

    :raises OSError: the system has no socket filters, or refused the program.
    """
    code = b"".join(struct.pack("HBBI", *i) for i in instructions)
    buffer = ctypes.create_string_buffer(code, len(code))
    fprog = struct.pack("HL", len(instructions), ctypes.addressof(buffer))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def detach(sock: socket.socket) -> None:
    """Remove the filter of ``sock`` (none there is not an error)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_DETACH_FILTER, 0)
    except OSError:
        pass
