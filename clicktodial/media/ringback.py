"""
Ringback and failure tones for the caller's leg of a click-to-dial call.

RFC 3725 Flow IV answers the caller's offer (in the ACK) before the callee
is rung.  With :class:`RingbackPlayer` that answer is ours for real: a
stream from our address (:func:`~clicktodial.sip.sdp.ringback_answer`), on
which the caller hears ringback while the callee rings.  When the callee
answers, the stream stops and the caller is re-INVITEd with the callee's
offer as before.  When the call cannot be made, the caller hears the busy
tone (486, 600, 603) or the congestion tone (anything else) for
``failure_tone_seconds``, then gets the BYE.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from clicktodial.media.codecs import Codec
from clicktodial.media.rtp import PortRangeExhausted, RtpPortAllocator, RtpStream
from clicktodial.media.tones import BUSY, CONGESTION, RINGBACK, PacketLoop, tone, wav_file
from clicktodial.netaddr import ip_of
from clicktodial.sip.sdp import NoUsableMedia, audio_destination, ringback_answer

__all__ = ["BUSY_STATUSES", "RingbackPlayer"]

log = Logger(namespace="clicktodial.media.ringback")

#: Final statuses the busy tone answers (RFC 3261 §21.4.24, §21.6.1, §21.6.2); other
#: failures get the congestion tone.
BUSY_STATUSES = frozenset({486, 600, 603})


class RingbackPlayer:
    """
    The daemon's tone streams: one per call at most, on ports of ``allocator``.

    :param ringback: ``us``, ``uk``, ``eu`` or ``file:PATH`` (``[calls] ringback``).
    :param tones: region of the busy and congestion tones (``[calls] tones``).
    :param failure_tone_seconds: how long a failure tone plays before the caller's BYE.
    :param direction: of our answer, ``sendrecv`` or ``sendonly`` (``[media] direction``).
    """

    def __init__(
        self,
        clock: IReactorTime,
        allocator: RtpPortAllocator,
        *,
        ringback: str,
        tones: str = "us",
        failure_tone_seconds: float = 3.0,
        direction: str = "sendrecv",
        rng: random.Random | None = None,
    ) -> None:
        self.clock = clock
        self.allocator = allocator
        self.ringback = ringback
        self.tones = tones
        self.failure_tone_seconds = failure_tone_seconds
        self.direction = direction
        self.rng = rng
        self._sources: dict[tuple[str, Codec], PacketLoop] = {}
        #: Streams playing, with the action waiting for the end of a failure tone.
        self._streams: dict[RtpStream, tuple[IDelayedCall, Callable[[], None]] | None] = {}

    def _source(self, kind: str, codec: Codec) -> PacketLoop:
        # Encoded once per kind and codec, then shared by every call.
        key = (kind, codec)
        source = self._sources.get(key)
        if source is None:
            if kind == "ringback" and self.ringback.startswith("file:"):
                source = wav_file(self.ringback[len("file:") :], codec)
            elif kind == "ringback":
                source = tone(RINGBACK[self.ringback], codec, f"ringback {self.ringback}")
            elif kind == "busy":
                source = tone(BUSY[self.tones], codec, f"busy {self.tones}")
            else:
                source = tone(CONGESTION[self.tones], codec, f"congestion {self.tones}")
            self._sources[key] = source
        return source

    @property
    def streams(self) -> int:
        """Streams playing (0 when idle: nothing leaked)."""
        return len(self._streams)

    def answer(
        self, offer: bytes, call_id: str, peer_host: str | None = None
    ) -> tuple[bytes, RtpStream] | None:
        """
        Start ringback to the caller's ``offer``; our answer and the stream.

        ``peer_host`` is the address the caller's phone signals from (its NAT's, behind
        one), if known: a phone does not choose where the daemon sends its RTP
        (docs/security.md). When the offer names another address (a private one behind
        NAT), the stream goes to ``peer_host`` at the offer's port instead, and an RTP
        packet from ``peer_host`` (only from there) moves it to where that packet came
        from: symmetric RTP through the phone's NAT (docs/media.md).

        None, logged, when the offer has no audio stream we can send G.711 to or no
        port is free: the caller then gets the held answer and hears nothing.
        """
        try:
            chosen = audio_destination(offer)
            destination = chosen.destination
            if peer_host is not None and ip_of(chosen.host) != ip_of(peer_host):
                destination = (peer_host, destination[1])
            source = self._source("ringback", Codec[chosen.encoding])
            stream = RtpStream.open(
                self.allocator,
                self.clock,
                source,
                destination,
                call_id=call_id,
                rng=self.rng,
                latch_host=peer_host,
            )
        except (NoUsableMedia, PortRangeExhausted, ValueError) as e:
            log.warn("call {record}: no ringback: {error}", record=call_id, error=str(e))
            return None
        # The sender keeps the offer's payload type number (it may be a dynamic one).
        stream.sender.packetizer.payload_type = chosen.payload_type
        self._streams[stream] = None
        log.debug(
            "call {record}: ringback {source} to {peer} from port {port}",
            record=call_id,
            source=source.name,
            peer=destination,
            port=stream.local_port,
        )
        body = ringback_answer(
            offer, chosen, self.allocator.address, stream.local_port, direction=self.direction
        )
        return body, stream

    def fail(self, stream: RtpStream, status: int | None, then: Callable[[], None]) -> None:
        """
        Play the busy or congestion tone on ``stream`` for ``failure_tone_seconds``, then
        close it and call ``then`` (the BYE).  At once if the tone is off or ``stream``
        is not playing.
        """
        if stream not in self._streams or self.failure_tone_seconds <= 0:
            self.stop(stream)
            then()
            return
        self.cancel_tone(stream)
        kind = "busy" if status in BUSY_STATUSES else "congestion"
        stream.sender.set_source(self._source(kind, stream.sender.codec))

        def done() -> None:
            self._streams[stream] = None
            self.stop(stream)
            then()

        self._streams[stream] = (self.clock.callLater(self.failure_tone_seconds, done), then)

    def cancel_tone(self, stream: RtpStream) -> None:
        """Forget the action waiting for the end of ``stream``'s failure tone."""
        pending = self._streams.get(stream)
        if pending is not None:
            timer, _ = pending
            if timer.active():
                timer.cancel()
            self._streams[stream] = None

    def stop(self, stream: RtpStream) -> None:
        """Stop ``stream`` and release its port; a waiting action is dropped (idempotent)."""
        if stream in self._streams:
            self.cancel_tone(stream)
            del self._streams[stream]
            sender = stream.sender
            # Skipped packets mean the reactor was late (an overloaded host): the
            # caller heard a gap.  Dropped ones are the phone's own (sendrecv).
            log.debug(
                "call {record}: tone stream stopped: {sent} packets sent,"
                " {skipped} skipped, {dropped} received and dropped",
                record=sender.call_id,
                sent=sender.sent,
                skipped=sender.skipped,
                dropped=sender.dropped,
            )
        stream.close()

    def stop_all(self) -> int:
        """Stop every stream, running the actions still waiting (shutdown); how many."""
        streams = list(self._streams.items())
        for stream, pending in streams:
            self.stop(stream)
            if pending is not None:
                pending[1]()
        return len(streams)
