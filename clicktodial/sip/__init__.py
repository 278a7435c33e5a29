"""clicktodial's own RFC 3261 SIP stack.

Layers, bottom up: wire format (:mod:`~clicktodial.sip.uri`,
:mod:`~clicktodial.sip.headers`, :mod:`~clicktodial.sip.message`,
:mod:`~clicktodial.sip.parser`; pure, no Twisted), transport, transactions,
dialogs and the user-agent core.
"""
