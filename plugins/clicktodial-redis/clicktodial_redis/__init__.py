"""
clicktodial-redis: SIP registrations (the location store) in Redis.

``factory`` is the entry point ``redis`` of the group ``clicktodial.location_backends``:
``[location] backend = redis`` with a ``[location:redis]`` section (README.md).
"""

from __future__ import annotations

from clicktodial_redis.factory import RedisLocationBackendFactory, RedisOptions
from clicktodial_redis.store import RedisLocationStore

#: The object the entry point names.
factory = RedisLocationBackendFactory()

__all__ = ["RedisLocationBackendFactory", "RedisLocationStore", "RedisOptions", "factory"]
