"""
RFC 3261 §17 transactions, one module per state machine.

Import the public names from L{clicktodial.sip.transaction}.
"""
