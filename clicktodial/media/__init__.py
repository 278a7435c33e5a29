"""
A small RTP media engine: G.711 codecs, tone and WAV sources, an RTP sender.

The call controller uses it to answer the caller's leg with its own stream
(ringback while the callee rings, a failure tone when the call cannot be
made).  See ``docs/media.md``.
"""
