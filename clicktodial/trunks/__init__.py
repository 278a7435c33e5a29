"""
SIP trunks to a provider (docs/trunks.md): calling out to the telephone network through a
company's SIP provider.

One concept per module:

- :mod:`~clicktodial.trunks.config`: the ``[trunk:NAME]`` sections, validated;
- :mod:`~clicktodial.trunks.resolver`: RFC 3263 (NAPTR, SRV, A/AAAA) for the provider's proxy;
- :mod:`~clicktodial.trunks.registration`: REGISTER to the provider, refreshed, with digest;
- :mod:`~clicktodial.trunks.keepalive`: OPTIONS keep-alive marking a trunk up or down;
- :mod:`~clicktodial.trunks.limits`: the concurrent-call and calls-per-second admission;
- :mod:`~clicktodial.trunks.inbound`: requests arriving from a trunk are refused (no relay);
- :mod:`~clicktodial.trunks.trunk`: the :class:`~clicktodial.interfaces.ITrunk` a call uses,
  and the registry of trunks by name built at start-up.
"""
