"""
Test support that ships with clicktodial: fakes that make Deferreds fire
synchronously and contract test suites for third-party store backends.
"""
