"""
Click-to-dial calls: the call controller (a B2BUA running RFC 3725 third-party
call control), its policies (who may call whom, limits, media flow) and the
publication of call state changes.  See docs/calls.md.
"""
