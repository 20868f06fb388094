"""Sliding-window rate limits in Redis (per tenant, and failed authentications per address).

A sorted set per key holds one member per accepted request, scored by the Redis server's
clock (so several API processes agree). The whole check-and-add is one Lua script, so
concurrent requests cannot both take the last slot.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

_NOW_AND_TRIM = """
local key = KEYS[1]
local window_ms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
local count = redis.call('ZCARD', key)
local function reset_ms()
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  if oldest[2] == nil then return 0 end
  return tonumber(oldest[2]) + window_ms - now
end
"""

_HIT = (
    _NOW_AND_TRIM
    + """
if count < limit then
  redis.call('ZADD', key, now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', key, window_ms)
  return {1, limit - count - 1, reset_ms()}
end
return {0, 0, reset_ms()}
"""
)

_PEEK = (
    _NOW_AND_TRIM
    + """
if count < limit then
  return {1, limit - count, reset_ms()}
end
return {0, 0, reset_ms()}
"""
)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    reset_after_ms: int

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.reset_after_ms / 1000))

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.retry_after_seconds),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_seconds)
        return headers


class RateLimiter:
    def __init__(
        self, redis: Redis, limit: int, window_seconds: int, *, prefix: str = "ratelimit"
    ) -> None:
        self.redis = redis
        self.limit = limit
        self.window_seconds = window_seconds
        self.window_ms = window_seconds * 1000
        self.prefix = prefix
        self._hit = redis.register_script(_HIT)
        self._peek = redis.register_script(_PEEK)

    def _key(self, key: str) -> str:
        return f"zixly:{self.prefix}:{key}"

    async def hit(self, key: str) -> Decision:
        """Take a slot if one is free."""
        allowed, remaining, reset_ms = await self._hit(
            keys=[self._key(key)], args=[self.window_ms, self.limit, secrets.token_hex(6)]
        )
        return Decision(bool(allowed), self.limit, int(remaining), int(reset_ms))

    async def peek(self, key: str) -> Decision:
        """Whether a slot is free, without taking it."""
        allowed, remaining, reset_ms = await self._peek(
            keys=[self._key(key)], args=[self.window_ms, self.limit]
        )
        return Decision(bool(allowed), self.limit, int(remaining), int(reset_ms))
