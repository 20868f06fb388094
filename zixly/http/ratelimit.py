"""Per-tenant sliding-window rate limit in Redis.

A sorted set per key holds one member per accepted request, scored by the Redis server's
clock (so several API processes agree). The whole check-and-add is one Lua script, so
concurrent requests cannot both take the last slot.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass

from redis.asyncio import Redis

_SCRIPT = """
local key = KEYS[1]
local window_ms = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_ms)
local count = redis.call('ZCARD', key)
if count < limit then
  redis.call('ZADD', key, now, now .. '-' .. ARGV[3])
  redis.call('PEXPIRE', key, window_ms)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return {1, limit - count - 1, tonumber(oldest[2]) + window_ms - now}
end
local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
return {0, 0, tonumber(oldest[2]) + window_ms - now}
"""


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
    def __init__(self, redis: Redis, limit: int, window_seconds: int) -> None:
        self.redis = redis
        self.limit = limit
        self.window_ms = window_seconds * 1000
        self._script = redis.register_script(_SCRIPT)

    async def hit(self, key: str) -> Decision:
        allowed, remaining, reset_ms = await self._script(
            keys=[f"zixly:ratelimit:{key}"],
            args=[self.window_ms, self.limit, secrets.token_hex(6)],
        )
        return Decision(bool(allowed), self.limit, int(remaining), int(reset_ms))
