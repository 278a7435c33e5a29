"""
The tests of clicktodial-redis. A package, so that its ``conftest`` is not the top-level
``conftest`` module that the repository's tests/ import helpers from.
"""
