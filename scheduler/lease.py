"""A lease in Redis: one scheduler scans at a time, however many replicas run.

The holder writes a random token under the key with a time to live and
extends it while it lives; when it dies the key expires and another replica
takes it within ``ttl``. Extending and releasing compare the token first (one
Lua script each), so a replica never extends or frees a lease it lost.
"""

from __future__ import annotations

import uuid
from typing import Any

#: Milliseconds a lease lasts unless extended.
DEFAULT_LEASE_TTL_MS = 10_000

_EXTEND = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


class Lease:
    """One named lease; ``hold()`` takes or extends it and tells whether we have it."""

    def __init__(self, client: Any, name: str, *, ttl_ms: int = DEFAULT_LEASE_TTL_MS) -> None:
        self.client = client
        self.key = name
        self.ttl_ms = ttl_ms
        self.token = uuid.uuid4().hex
        self._extend = client.register_script(_EXTEND)
        self._release = client.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take the lease if it is free, extend it if it is ours; True while we hold it."""
        if self.client.set(self.key, self.token, nx=True, px=self.ttl_ms):
            return True
        return bool(self._extend(keys=[self.key], args=[self.token, self.ttl_ms]))

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        self._release(keys=[self.key], args=[self.token])
