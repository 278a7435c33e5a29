"""
rtpengine's ``ng`` control protocol, and the media relay built on it.

``ng`` (rtpengine's docs, "ng Control Protocol"): each request is one UDP
datagram ``COOKIE SP bencoded-dictionary``; the reply echoes the cookie.
The dictionary names a ``command`` (``ping``, ``offer``, ``answer``,
``delete``, ``query``, ``list``); the reply's ``result`` is ``ok`` (``pong``
for a ping) or ``error`` with an ``error-reason``.  rtpengine remembers the
cookies it has answered and replies to a retransmission with the same reply
without doing the command again, so retransmitting is safe.

* :class:`NgClient`: a :class:`DatagramProtocol` on the injected clock.  A command is
  sent, retransmitted with exponential backoff (``retries`` times within
  ``timeout``), then tried on the next configured server; when none
  answers, its Deferred fails with :class:`RelayTimeout`.  Replies are matched by
  cookie and source address; anything else (unknown cookie, a late
  duplicate, a datagram that does not decode, a stranger) is logged and
  dropped.
* :class:`RtpEngineRelay`: :class:`IMediaRelay` over an :class:`NgClient`.  Every command of
  one call goes to the server that took its first offer.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredList
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime, IReactorUDP
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from clicktodial.interfaces import IMediaRelay
from clicktodial.media.bencode import Bencodable, bdecode, bencode

__all__ = [
    "NgClient",
    "NgClientService",
    "NgStats",
    "RelayError",
    "RelayTimeout",
    "RtpEngineRelay",
    "retransmit_delays",
]

log = Logger(namespace="clicktodial.media.rtpengine")


class RelayError(Exception):
    """The media relay refused a command (``reason``: its ``error-reason``)."""

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(f"rtpengine {command}: {reason}")
        self.command = command
        self.reason = reason


class RelayTimeout(RelayError):
    """No configured relay answered a command in time."""


def retransmit_delays(timeout: float, retries: int) -> list[float]:
    """
    When a command is sent to one server, as offsets from its first send:
    the first send, then ``retries`` retransmissions, each gap twice the one
    before, the last wait as long again, all within ``timeout``.

    >>> retransmit_delays(1.5, 3)
    [0.0, 0.1, 0.3, 0.7]
    """
    first = timeout / (2 ** (retries + 1) - 1)
    return [round(first * (2**n - 1), 6) for n in range(retries + 1)]


@attrs.define
class NgStats:
    """What /metrics shows of the ng client."""

    commands: int = 0
    errors: int = 0  # error replies
    timeouts: int = 0  # commands no server answered
    retransmissions: int = 0
    dropped: int = 0  # datagrams that matched no pending command or did not decode
    round_trip_sum: float = 0.0
    round_trip_count: int = 0


@attrs.define
class _Pending:
    command: str
    datagram: bytes
    deferred: Deferred[dict[str, object]]
    servers: list[tuple[str, int]]
    started: float
    sends: int = 0
    timer: IDelayedCall | None = None


class NgClient(DatagramProtocol):
    """
    Sends ``ng`` commands to rtpengine and matches the replies.

    :param servers: the ``ng`` addresses (IP literals), tried in order.
    :param timeout: seconds one server has to answer a command.
    :param retries: retransmissions to one server within ``timeout``.
    """

    def __init__(
        self,
        clock: IReactorTime,
        servers: Sequence[tuple[str, int]],
        *,
        timeout: float = 1.5,
        retries: int = 3,
    ) -> None:
        if not servers:
            raise ValueError("no ng server")
        self.clock = clock
        self.servers = list(servers)
        self.timeout = timeout
        self.delays = retransmit_delays(timeout, retries)
        self.stats = NgStats()
        self._pending: dict[bytes, _Pending] = {}
        self._prefix = secrets.token_hex(4)
        self._counter = itertools.count(1)
        self._idle_waiters: list[Deferred[None]] = []

    def pending_count(self) -> int:
        """Commands waiting for a reply."""
        return len(self._pending)

    def idle(self) -> Deferred[None]:
        """Fires when no command waits for a reply (each is bounded by its timeout)."""
        d: Deferred[None] = Deferred()
        if not self._pending:
            d.callback(None)
        else:
            self._idle_waiters.append(d)
        return d

    def command(
        self,
        command: str,
        params: Mapping[str, Bencodable] | None = None,
        server: tuple[str, int] | None = None,
    ) -> Deferred[dict[str, object]]:
        """
        Send ``command`` with ``params``; the Deferred fires with the reply
        dictionary (its ``result`` is ``ok`` or ``pong``) and the server that
        answered under the key ``"_server"``.

        :param server: send to this server only (a call's later commands
            must reach the rtpengine that holds its session); by default
            the configured servers in turn.
        :raises RelayError: (failure) an ``error`` reply.
        :raises RelayTimeout: (failure) no server answered.
        """
        cookie = f"{self._prefix}{next(self._counter)}".encode()
        body = dict(params or {})
        body["command"] = command
        datagram = cookie + b" " + bencode(body)

        def cancel(_: Deferred[dict[str, object]]) -> None:
            self._forget(cookie)

        deferred: Deferred[dict[str, object]] = Deferred(cancel)
        servers = [server] if server is not None else list(self.servers)
        pending = _Pending(command, datagram, deferred, servers, self.clock.seconds())
        self._pending[cookie] = pending
        self.stats.commands += 1
        self._send(cookie, pending)
        return deferred

    def _send(self, cookie: bytes, pending: _Pending) -> None:
        step = pending.sends % len(self.delays)
        if pending.sends and step == 0:
            # This server had its chance: the next one, or give up.
            pending.servers.pop(0)
            if not pending.servers:
                self._forget(cookie)
                self.stats.timeouts += 1
                log.warn(
                    "rtpengine {command}: no answer from any ng server",
                    command=pending.command,
                )
                pending.deferred.errback(RelayTimeout(pending.command, "no answer"))
                return
        elif step:
            self.stats.retransmissions += 1
        pending.sends += 1
        if self.transport is not None:
            try:
                self.transport.write(pending.datagram, pending.servers[0])
            except OSError as e:
                log.warn(
                    "rtpengine {command}: send failed: {error}", command=pending.command, error=e
                )
        if self._pending.get(cookie) is not pending:
            return  # answered (or cancelled) while being sent: no retransmission timer
        gap = (
            self.delays[step + 1] - self.delays[step]
            if step + 1 < len(self.delays)
            else self.timeout - self.delays[step]
        )
        pending.timer = self.clock.callLater(gap, self._send, cookie, pending)

    def _forget(self, cookie: bytes) -> _Pending | None:
        pending = self._pending.pop(cookie, None)
        if pending is not None and pending.timer is not None and pending.timer.active():
            pending.timer.cancel()
        if not self._pending and self._idle_waiters:
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
        return pending

    def datagramReceived(self, datagram: bytes, addr: tuple[str, int]) -> None:
        cookie, _, body = datagram.partition(b" ")
        pending = self._pending.get(cookie)
        if pending is None or tuple(addr[:2]) not in [tuple(s) for s in self.servers]:
            self.stats.dropped += 1
            log.debug("ng reply dropped: unknown cookie or source {peer}", peer=addr)
            return
        try:
            reply = bdecode(body)
        except ValueError as e:
            self.stats.dropped += 1
            log.warn("ng reply from {peer} dropped: {error}", peer=addr, error=e)
            return
        if not isinstance(reply, dict):
            self.stats.dropped += 1
            log.warn("ng reply from {peer} dropped: not a dictionary", peer=addr)
            return
        self._forget(cookie)
        round_trip = self.clock.seconds() - pending.started
        self.stats.round_trip_sum += round_trip
        self.stats.round_trip_count += 1
        result = reply.get("result")
        if result in (b"ok", b"pong"):
            reply["_server"] = tuple(addr[:2])
            pending.deferred.callback(reply)
            return
        self.stats.errors += 1
        reason = reply.get("error-reason", result)
        text = reason.decode("utf-8", "replace") if isinstance(reason, bytes) else repr(reason)
        log.warn("rtpengine {command} failed: {reason}", command=pending.command, reason=text)
        pending.deferred.errback(RelayError(pending.command, text))

    def stopProtocol(self) -> None:
        """The port is closed: every pending command fails."""
        for cookie in list(self._pending):
            pending = self._forget(cookie)
            if pending is not None:
                pending.deferred.errback(RelayError(pending.command, "ng client stopped"))


class NgClientService(Service):
    """
    The ng client's UDP port in the daemon: opened at start (an ephemeral
    port on the address family of the first server); at stop, it waits for
    the commands still outstanding (the calls' ``delete``s sent as they were
    hung up), each bounded by the client's timeout, then closes.
    """

    def __init__(self, reactor: IReactorUDP, client: NgClient) -> None:
        self.reactor = reactor
        self.client = client
        self._port: IListeningPort | None = None

    def startService(self) -> None:
        super().startService()
        interface = "::" if ":" in self.client.servers[0][0] else "0.0.0.0"
        self._port = self.reactor.listenUDP(0, self.client, interface, 65535)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        port, self._port = self._port, None

        def close(_: object) -> object:
            return port.stopListening() if port is not None else None

        d = self.client.idle()
        d.addCallback(close)
        return d


def _address_family(address: str) -> bytes:
    return b"IP6" if ":" in address else b"IP4"


@implementer(IMediaRelay)
class RtpEngineRelay:
    """
    :class:`IMediaRelay` through rtpengine.

    Offers and answers ask rtpengine to drop ICE candidates (they would name
    the phones' private addresses) and, when the phone's signalling source
    is known, to send its media to that address (``received-from`` plus the
    ``SIP-source-address`` flag) rather than to the SDP's; rtpengine then
    latches to where the phone's RTP really comes from (its default,
    "symmetric" learning).  Without a source, the SDP address is trusted.

    :param directions: rtpengine interface names for the caller and callee
        sides (``[media:rtpengine] interfaces``), or empty.
    """

    name = "rtpengine"

    def __init__(self, client: NgClient, directions: Sequence[str] = ()) -> None:
        self.client = client
        self.directions = list(directions)
        self._server_of: dict[str, tuple[str, int]] = {}

    def sessions(self) -> int:
        """Calls with a relay session (offered and not deleted)."""
        return len(self._server_of)

    def _params(
        self, call_id: str, from_tag: str, sdp: bytes, source: str | None
    ) -> dict[str, Bencodable]:
        params: dict[str, Bencodable] = {
            "call-id": call_id,
            "from-tag": from_tag,
            "sdp": sdp,
            "ICE": "remove",
            "replace": ["session-connection"],
        }
        if source:
            params["received-from"] = [_address_family(source), source]
            params["flags"] = ["SIP-source-address"]
        else:
            params["flags"] = ["trust-address"]
        if self.directions:
            params["direction"] = list(self.directions)
        return params

    @staticmethod
    def _sdp(reply: dict[str, object], command: str) -> bytes:
        sdp = reply.get("sdp")
        if not isinstance(sdp, bytes):
            raise RelayError(command, "reply without sdp")
        return sdp

    def offer(self, call_id: str, from_tag: str, sdp: bytes, source: str | None) -> Deferred[bytes]:
        """See :meth:`IMediaRelay.offer`."""
        d = self.client.command(
            "offer", self._params(call_id, from_tag, sdp, source), self._server_of.get(call_id)
        )

        def offered(reply: dict[str, object]) -> bytes:
            server = reply.get("_server")
            if isinstance(server, tuple):
                self._server_of.setdefault(call_id, server)
            return self._sdp(reply, "offer")

        return d.addCallback(offered)

    def answer(
        self, call_id: str, from_tag: str, to_tag: str, sdp: bytes, source: str | None
    ) -> Deferred[bytes]:
        """See :meth:`IMediaRelay.answer`."""
        params = self._params(call_id, from_tag, sdp, source)
        params["to-tag"] = to_tag
        d = self.client.command("answer", params, self._server_of.get(call_id))
        return d.addCallback(self._sdp, "answer")

    def delete(self, call_id: str) -> Deferred[None]:
        """
        See :meth:`IMediaRelay.delete`: the whole call (no tag given), on the
        server that took its offer.  A call this relay did not offer (one a
        crashed run or a dead node made: :class:`clicktodial.calls.relay.LostCalls`)
        may be on any server: the delete goes to each; it succeeds if one
        server deleted the call, and fails with the first failure otherwise.
        """
        server = self._server_of.pop(call_id, None)
        servers = [server] if server is not None else list(self.client.servers)
        if len(servers) == 1:
            d = self.client.command("delete", {"call-id": call_id}, servers[0])
            return d.addCallback(lambda _: None)

        def outcome(results: list[tuple[bool, Any]]) -> None:
            # (False, Failure) for a server that refused or did not answer.
            if not any(ok for ok, _ in results):
                failure: Failure = results[0][1]
                failure.raiseException()

        deletes = [self.client.command("delete", {"call-id": call_id}, s) for s in servers]
        return DeferredList(deletes, consumeErrors=True).addCallback(outcome)

    def stats(self) -> Mapping[str, float]:
        """See :meth:`IMediaRelay.stats`."""
        stats = self.client.stats
        return {
            "commands": stats.commands,
            "errors": stats.errors,
            "timeouts": stats.timeouts,
            "retransmissions": stats.retransmissions,
            "round_trip_seconds_sum": stats.round_trip_sum,
            "round_trip_count": stats.round_trip_count,
            "sessions": len(self._server_of),
        }

    def query(self, call_id: str) -> Deferred[Mapping[str, object]]:
        """See :meth:`IMediaRelay.query`."""
        d = self.client.command("query", {"call-id": call_id}, self._server_of.get(call_id))
        return d.addCallback(lambda reply: reply)
