# twistd dropin: names the module holding the code and imports nothing heavy, so plugin
# discovery stays cheap. No __init__.py here or in twisted/: Twisted merges this directory
# into its own twisted.plugins package.
from twisted.application.service import ServiceMaker

clicktodial = ServiceMaker(
    "clicktodial", "clicktodial.tap", "Click-to-dial SIP daemon (RFC 3261, RFC 3725)", "clicktodial"
)
