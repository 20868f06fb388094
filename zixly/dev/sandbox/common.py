"""What the sandbox's data APIs share: seeded data, injected faults, rate limits, cursors,
the request log, and the gate every data request passes.

Why one gate: each provider authenticates, throttles and refuses in its own words (Xero's
``X-Rate-Limit-Problem``, HubSpot's ``policyName``, Shopify's leaky bucket header, Asana's
``errors`` list), but the order of checks and what a test can steer are the same
everywhere: an unknown or expired access token answers 401; then a queued fault (a 429
with Retry-After, any other status, latency) fires; then the provider's real limits apply.
Every request is logged with its status and arrival time, so a test can prove a client
paged through everything and waited out a 429 for as long as it was told to.

Data is a pure function of the seed, the sandbox's "today" and the request: the same
request gets the same answer, and tests compute what a template must have produced from
the same generators.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import random
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

if TYPE_CHECKING:
    from zixly.dev.sandbox.oauth import ProviderSandbox

CENT = Decimal("0.01")
Handler = Callable[[Request], Awaitable[Response]]


def today_utc() -> date:
    return datetime.now(UTC).date()


@dataclass
class DataConfig:
    """What the data is generated from, and each provider's limits (their documented
    defaults; tests lower them to provoke a limit quickly)."""

    seed: int = 7
    today: date = field(default_factory=today_utc)  # data runs up to this day
    history_days: int = 90  # how far back generated activity goes
    # Xero, per tenant: 60 calls a minute, 5,000 a day, 5 at once.
    xero_per_minute: int = 60
    xero_per_day: int = 5000
    xero_concurrent: int = 5
    # HubSpot, per account for OAuth apps: 110 requests per 10 s rolling window.
    hubspot_per_window: int = 110
    hubspot_window_seconds: float = 10.0
    # Asana, per token: 150 requests a minute (free plan).
    asana_per_minute: int = 150
    # Shopify, per shop: a leaky bucket of 40 calls leaking 2 a second.
    shopify_bucket: int = 40
    shopify_leak_per_second: float = 2.0


@dataclass
class ApiFault:
    """One queued failure of a data request (consumed when it fires).

    ``retry_after`` is how long the provider asks the client to wait; each provider says it
    its own way (HubSpot: the rate-limit window in ``X-HubSpot-RateLimit-Interval-
    Milliseconds``, the others: ``Retry-After``).
    """

    provider: str | None = None  # None: any provider's next data request
    status: int = 429
    retry_after: float | None = 2.0
    delay: float = 0.0  # seconds before answering
    path: str | None = None  # only requests whose path contains this
    skip: int = 0  # let this many matching requests through first


@dataclass(frozen=True)
class ApiCall:
    """One data request as the sandbox saw it."""

    provider: str
    method: str
    path: str  # below the provider's prefix, e.g. /crm/v3/objects/deals
    query: dict[str, str]
    status: int
    at: float  # time.monotonic() at arrival
    fault: bool = False  # answered by an injected fault


# --- seeded data --------------------------------------------------------------------------------


def rng(seed: int, *parts: object) -> random.Random:
    """A random generator determined by the seed and ``parts`` only."""
    digest = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))  # noqa: S311 (data, not secrets)


def seeded_uuid(seed: int, *parts: object) -> str:
    digest = bytearray(hashlib.sha256(repr(("uuid", seed, *parts)).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40  # version 4
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    hexed = digest.hex()
    return f"{hexed[:8]}-{hexed[8:12]}-{hexed[12:16]}-{hexed[16:20]}-{hexed[20:]}"


def money(value: Decimal | float | int) -> Decimal:
    return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)


def gst_in(inclusive: Decimal) -> Decimal:
    """The GST in a GST-inclusive amount (1/11, half a cent up: GST Act s9-90)."""
    return money(inclusive / Decimal(11))


# --- opaque cursors -----------------------------------------------------------------------------


def encode_cursor(**values: Any) -> str:
    raw = json.dumps(values, sort_keys=True, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(token: str) -> dict[str, Any] | None:
    """The values of a cursor from :func:`encode_cursor`; None when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    return values if isinstance(values, dict) else None


def query_hash(query: dict[str, str], *ignore: str) -> str:
    """Ties a cursor to the filters it was issued for."""
    kept = sorted((k, v) for k, v in query.items() if k not in ignore)
    return hashlib.sha256(repr(kept).encode()).hexdigest()[:12]


# --- rate limits --------------------------------------------------------------------------------


class SlidingWindow:
    """At most ``limit`` calls per key in any ``window`` seconds."""

    def __init__(
        self, limit: int, window: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self._calls: dict[str, deque[float]] = defaultdict(deque)

    def _trim(self, key: str) -> deque[float]:
        calls = self._calls[key]
        now = self.clock()
        while calls and calls[0] <= now - self.window:
            calls.popleft()
        return calls

    def take(self, key: str) -> float | None:
        """Record a call: None when allowed, else the seconds until one would be."""
        calls = self._trim(key)
        if len(calls) >= self.limit:
            return max(calls[0] + self.window - self.clock(), 0.0)
        calls.append(self.clock())
        return None

    def remaining(self, key: str) -> int:
        return max(self.limit - len(self._trim(key)), 0)


class LeakyBucket:
    """Shopify's bucket: each call adds one, ``leak`` drain a second, full means 429."""

    def __init__(
        self, capacity: int, leak: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.capacity = capacity
        self.leak = leak
        self.clock = clock
        self._level: dict[str, tuple[float, float]] = {}

    def level(self, key: str) -> float:
        level, at = self._level.get(key, (0.0, self.clock()))
        return max(level - (self.clock() - at) * self.leak, 0.0)

    def take(self, key: str) -> bool:
        level = self.level(key)
        if level + 1 > self.capacity:
            self._level[key] = (level, self.clock())
            return False
        self._level[key] = (level + 1, self.clock())
        return True


# --- the gate ------------------------------------------------------------------------------------


class ProviderApi:
    """One provider's data API: subclasses supply routes, how a request names its access
    token and the provider's refusals; :meth:`endpoint` wraps each handler in the gate."""

    name: str = ""

    def __init__(self, sandbox: ProviderSandbox) -> None:
        self.sandbox = sandbox

    @property
    def data(self) -> DataApis:
        return self.sandbox.data

    @property
    def config(self) -> DataConfig:
        return self.sandbox.data.config

    def routes(self) -> list[BaseRoute]:
        raise NotImplementedError

    # --- what each provider says its own way -----------------------------------------------
    def token_of(self, request: Request) -> str:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        return token.strip() if scheme.lower() == "bearer" else ""

    def unauthorized(self, state: str) -> Response:  # state: "unknown" | "expired"
        raise NotImplementedError

    def refused(self, fault: ApiFault) -> Response:
        """The answer to an injected fault (a 429 in the provider's shape by default)."""
        raise NotImplementedError

    async def limit(self, request: Request) -> Response | None:
        """The provider's own rate limits: a 429, or None to go on."""
        return None

    def decorate(self, request: Request, response: Response) -> Response:
        """Headers every answer carries (remaining quota...)."""
        return response

    # --- the gate ---------------------------------------------------------------------------
    def endpoint(self, handler: Handler, *, authenticated: bool = True) -> Handler:
        async def gated(request: Request) -> Response:
            arrived = time.monotonic()
            fault_used = False
            response: Response | None = None
            if authenticated:
                state = self.sandbox.access_token_state(self.name, self.token_of(request))
                if state != "ok":
                    response = self.unauthorized(state)
            if response is None:
                fault = self.data.take_fault(self.name, self.path_of(request))
                if fault is not None:
                    fault_used = True
                    await asyncio.sleep(fault.delay)
                    response = self.refused(fault)
            if response is None:
                response = await self.limit(request)
            if response is None:
                if self.data.latency:
                    await asyncio.sleep(self.data.latency)
                response = self.decorate(request, await handler(request))
            self.data.calls.append(
                ApiCall(
                    provider=self.name,
                    method=request.method,
                    path=self.path_of(request),
                    query=dict(request.query_params),
                    status=response.status_code,
                    at=arrived,
                    fault=fault_used,
                )
            )
            return response

        return gated

    def path_of(self, request: Request) -> str:
        prefix = f"/{self.name}"
        path = request.url.path
        return path[len(prefix) :] if path.startswith(prefix + "/") else path


@dataclass
class DataApis:
    """The data APIs' state: configuration, queued faults, the request log."""

    config: DataConfig = field(default_factory=DataConfig)
    faults: list[ApiFault] = field(default_factory=list)
    calls: list[ApiCall] = field(default_factory=list)
    latency: float = 0.0  # seconds added to every successful answer

    def take_fault(self, provider: str, path: str) -> ApiFault | None:
        for index, fault in enumerate(self.faults):
            if fault.provider not in (None, provider):
                continue
            if fault.path is not None and fault.path not in path:
                continue
            if fault.skip > 0:
                fault.skip -= 1
                return None
            return self.faults.pop(index)
        return None

    def calls_to(self, provider: str, path: str | None = None) -> list[ApiCall]:
        return [
            c for c in self.calls if c.provider == provider and (path is None or path in c.path)
        ]
