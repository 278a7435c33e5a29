"""
clicktodial: a click-to-dial telephony daemon (RFC 3261 SIP, RFC 3725 third-party call control).

Run it with ``twistd -n clicktodial --config conf/dev.ini``; administer it with the
``clicktodial`` command (:mod:`clicktodial.cli`).
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
