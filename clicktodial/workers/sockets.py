"""
The shared SIP sockets of ``[daemon] workers``: the main process binds one UDP socket and
one listening TCP socket per worker, all on the ``[sip] listen`` address with
``SO_REUSEPORT``, and each worker inherits its pair (:class:`~clicktodial.sip.transport.
AdoptedSockets`). The kernel spreads new traffic over the group by a hash of the peer's
address and port: one peer's datagrams keep reaching one worker while the group does not
change. The main process keeps every socket open, so that a restarted worker finds the
datagrams that arrived for its socket meanwhile.
"""

from __future__ import annotations

import socket

import attrs

from clicktodial.config import HostPort
from clicktodial.netaddr import ip_of

__all__ = ["SharedSockets", "UDP_FD", "TCP_FD"]

#: Where a worker finds its shared sockets (``childFDs`` of the main process).
UDP_FD = 3
TCP_FD = 4


@attrs.frozen
class SharedSockets:
    """One UDP and one TCP socket per worker (``None``: that transport is not enabled)."""

    family: int
    port: int
    udp: tuple[socket.socket, ...]
    tcp: tuple[socket.socket, ...]

    @classmethod
    def bind(cls, listen: HostPort, transports: tuple[str, ...], count: int) -> SharedSockets:
        """
        Bind ``count`` sockets of each of UDP and TCP (those in ``transports``) to
        ``listen``; with port 0 the first picks the port the others share.

        :raises OSError: an address cannot be bound.
        """
        address = ip_of(listen.host)
        family = socket.AF_INET6 if address is not None and address.version == 6 else socket.AF_INET
        port = listen.port
        udp: list[socket.socket] = []
        tcp: list[socket.socket] = []
        wanted = [t.upper() for t in transports]
        try:
            for _ in range(count):
                if "UDP" in wanted:
                    udp.append(_bound(family, socket.SOCK_DGRAM, listen.host, port))
                    port = udp[-1].getsockname()[1]
                if "TCP" in wanted:
                    stream = _bound(family, socket.SOCK_STREAM, listen.host, port)
                    stream.listen(socket.SOMAXCONN)
                    tcp.append(stream)
                    port = stream.getsockname()[1]
        except OSError:
            for sock in udp + tcp:
                sock.close()
            raise
        return cls(family, port, tuple(udp), tuple(tcp))

    def child_fds(self, index: int) -> dict[int, int]:
        """Worker ``index``'s sockets as ``childFDs`` entries (fd in the worker -> ours)."""
        fds = {}
        if self.udp:
            fds[UDP_FD] = self.udp[index].fileno()
        if self.tcp:
            fds[TCP_FD] = self.tcp[index].fileno()
        return fds

    def close(self) -> None:
        for sock in self.udp + self.tcp:
            sock.close()


def _bound(family: int, kind: int, host: str, port: int) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock
