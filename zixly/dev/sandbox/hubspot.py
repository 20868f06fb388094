"""HubSpot's data API in the sandbox: CRM v3 deals, account details, access-token info.

Shapes follow HubSpot's CRM v3 objects API (docs/au-rules-and-provider-apis.md):
``GET /crm/v3/objects/deals?limit=&after=&properties=`` answers ``{results: [{id,
properties: {...} (all strings or null), createdAt, updatedAt, archived}], paging: {next:
{after, link}}}`` with no ``paging`` on the last page; ``limit`` defaults to 10 and may be
at most 100. ``GET /account-info/v3/details`` names the portal (``portalId``, currency,
time zone) and ``GET /oauth/v1/access-tokens/{token}`` describes a token (``hub_id``...).

Limits: an OAuth app gets 110 requests per rolling 10 seconds per account. Answers carry
``X-HubSpot-RateLimit-Max``, ``-Remaining`` and ``-Interval-Milliseconds``; over the limit
HubSpot answers 429 ``{"status": "error", "errorType": "RATE_LIMIT", "policyName":
"TEN_SECONDLY_ROLLING", ...}`` and documents no Retry-After: a client waits out the
interval. An injected fault's ``retry_after`` therefore becomes the interval header.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zixly.dev.sandbox.common import (
    ApiFault,
    ProviderApi,
    SlidingWindow,
    decode_cursor,
    encode_cursor,
    rng,
    seeded_uuid,
)

STAGES = (  # the default sales pipeline's stages, with how often a deal sits in each
    ("appointmentscheduled", 0.14),
    ("qualifiedtobuy", 0.14),
    ("presentationscheduled", 0.12),
    ("decisionmakerboughtin", 0.1),
    ("contractsent", 0.1),
    ("closedwon", 0.25),
    ("closedlost", 0.15),
)
CLOSED = {"closedwon", "closedlost"}
DEFAULT_PROPERTIES = (
    "dealname",
    "amount",
    "dealstage",
    "pipeline",
    "closedate",
    "createdate",
    "hs_lastmodifieddate",
)
ALWAYS = ("createdate", "hs_lastmodifieddate", "hs_object_id")
COMPANIES = (
    "Wattle & Co",
    "Coastline Dental",
    "Redgum Builders",
    "Marlin Bay Resort",
    "Ironbark Legal",
    "Outback Freight",
    "Lyrebird Studios",
    "Banksia Aged Care",
    "Cassowary Tech",
    "Paddington Florist",
)
PRODUCTS = ("annual plan", "onboarding", "expansion", "renewal", "pilot", "support pack")
DEAL_COUNT_RANGE = (230, 260)
MAX_LIMIT = 100


@dataclass(frozen=True)
class Deal:
    id: str
    name: str
    amount: Decimal | None
    stage: str
    created: datetime
    closed: datetime | None  # the close date (expected, for open deals)
    modified: datetime

    @property
    def status(self) -> str:
        return {"closedwon": "won", "closedlost": "lost"}.get(self.stage, "open")


def portal_id(seed: int) -> int:
    return 20_000_000 + rng(seed, "hubspot-portal").randrange(70_000_000)


def stamp(moment: datetime) -> str:
    """HubSpot's timestamps: UTC, milliseconds, ``Z``."""
    return (
        moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    )


@cache
def deals(seed: int, today: date, history_days: int) -> tuple[Deal, ...]:
    r = rng(seed, "hubspot-deals", today.isoformat())
    now = datetime.combine(today, time(9, 0), tzinfo=UTC)
    made: list[Deal] = []
    next_id = 17_000_000_000 + r.randrange(1_000_000)
    for _ in range(r.randint(*DEAL_COUNT_RANGE)):
        next_id += r.randint(3, 4000)
        created = now - timedelta(seconds=r.randrange(history_days * 86400))
        created = created.replace(microsecond=r.randrange(1000) * 1000)
        stage = r.choices([s for s, _ in STAGES], [w for _, w in STAGES])[0]
        if stage in CLOSED:
            closed = min(created + timedelta(days=r.randint(5, 60), hours=r.randint(0, 9)), now)
            modified = min(closed + timedelta(minutes=r.randint(1, 600)), now)
        else:
            closed = now + timedelta(days=r.randint(7, 90))
            modified = created + (now - created) * r.random()
        amount = None if r.random() < 0.05 else Decimal(r.randrange(30, 1700) * 50)
        made.append(
            Deal(
                id=str(next_id),
                name=f"{r.choice(COMPANIES)} - {r.choice(PRODUCTS)}",
                amount=amount,
                stage=stage,
                created=created,
                closed=closed.replace(microsecond=0),
                modified=modified.replace(microsecond=(modified.microsecond // 1000) * 1000),
            )
        )
    return tuple(made)


def _amount(value: Decimal | None) -> str | None:
    if value is None:
        return None
    text = f"{value:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def properties_of(deal: Deal) -> dict[str, str | None]:
    return {
        "dealname": deal.name,
        "amount": _amount(deal.amount),
        "dealstage": deal.stage,
        "pipeline": "default",
        "closedate": stamp(deal.closed) if deal.closed else None,
        "createdate": stamp(deal.created),
        "hs_lastmodifieddate": stamp(deal.modified),
        "hs_object_id": deal.id,
    }


class HubSpotApi(ProviderApi):
    name = "hubspot"

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        cfg = self.config
        self.window = SlidingWindow(cfg.hubspot_per_window, cfg.hubspot_window_seconds)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/crm/v3/objects/deals", self.endpoint(self.deals), methods=["GET"]),
            Route("/account-info/v3/details", self.endpoint(self.account), methods=["GET"]),
            Route(
                "/oauth/v1/access-tokens/{token}",
                self.endpoint(self.token_info, authenticated=False),
                methods=["GET"],
            ),
        ]

    @property
    def portal(self) -> int:
        return portal_id(self.config.seed)

    def _interval_ms(self) -> int:
        return int(self.config.hubspot_window_seconds * 1000)

    # --- refusals, in HubSpot's words -------------------------------------------------------------
    def _error(self, status: int, message: str, **extra: Any) -> Response:
        body = {
            "status": "error",
            "message": message,
            "correlationId": seeded_uuid(self.config.seed, "corr", len(self.data.calls)),
            **extra,
        }
        return JSONResponse(body, status)

    def unauthorized(self, state: str) -> Response:
        if state == "expired":
            return self._error(
                401,
                "The OAuth token used to make this call expired.",
                category="EXPIRED_AUTHENTICATION",
            )
        return self._error(
            401,
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
            category="INVALID_AUTHENTICATION",
        )

    def refused(self, fault: ApiFault) -> Response:
        if fault.status != 429:
            return self._error(fault.status, "an injected failure", category="SANDBOX_FAULT")
        interval = math.ceil((fault.retry_after or 10.0) * 1000)
        return self._too_many(interval)

    def _too_many(self, interval_ms: int) -> Response:
        response = self._error(
            429,
            "You have reached your ten_secondly_rolling limit.",
            errorType="RATE_LIMIT",
            policyName="TEN_SECONDLY_ROLLING",
            requestId=seeded_uuid(self.config.seed, "req", len(self.data.calls)),
        )
        response.headers.update(
            {
                "X-HubSpot-RateLimit-Interval-Milliseconds": str(interval_ms),
                "X-HubSpot-RateLimit-Max": str(self.config.hubspot_per_window),
                "X-HubSpot-RateLimit-Remaining": "0",
            }
        )
        return response

    async def limit(self, request: Request) -> Response | None:
        if "/oauth/" in request.url.path:
            return None
        if self.window.take(str(self.portal)) is not None:
            return self._too_many(self._interval_ms())
        return None

    def decorate(self, request: Request, response: Response) -> Response:
        if "/oauth/" not in request.url.path:
            response.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] = str(self._interval_ms())
            response.headers["X-HubSpot-RateLimit-Max"] = str(self.config.hubspot_per_window)
            response.headers["X-HubSpot-RateLimit-Remaining"] = str(
                self.window.remaining(str(self.portal))
            )
        return response

    # --- endpoints ------------------------------------------------------------------------------
    def all_deals(self) -> tuple[Deal, ...]:
        cfg = self.config
        return deals(cfg.seed, cfg.today, cfg.history_days)

    async def deals(self, request: Request) -> Response:
        query = request.query_params
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            limit = -1
        if not 1 <= limit <= MAX_LIMIT:
            return self._error(
                400,
                f"limit must be between 1 and {MAX_LIMIT}",
                category="VALIDATION_ERROR",
            )
        start = 0
        after = query.get("after")
        if after:
            cursor = decode_cursor(after)
            if cursor is None or not isinstance(cursor.get("i"), int):
                return self._error(400, "Invalid 'after' cursor", category="VALIDATION_ERROR")
            start = cursor["i"]
        wanted = [p for value in query.getlist("properties") for p in value.split(",") if p]
        names = [*dict.fromkeys([*(wanted or DEFAULT_PROPERTIES), *ALWAYS])]
        everything = self.all_deals()
        page = everything[start : start + limit]
        body: dict[str, Any] = {
            "results": [
                {
                    "id": deal.id,
                    "properties": {
                        name: value for name, value in properties_of(deal).items() if name in names
                    },
                    "createdAt": stamp(deal.created),
                    "updatedAt": stamp(deal.modified),
                    "archived": False,
                }
                for deal in page
            ]
        }
        if start + limit < len(everything):
            token = encode_cursor(i=start + limit)
            link = request.url.replace(query=urlencode({"after": token}))
            body["paging"] = {"next": {"after": token, "link": str(link)}}
        return JSONResponse(body)

    async def account(self, request: Request) -> Response:
        return JSONResponse(
            {
                "portalId": self.portal,
                "accountType": "STANDARD",
                "timeZone": "Australia/Sydney",
                "companyCurrency": "AUD",
                "additionalCurrencies": [],
                "utcOffset": "+10:00",
                "utcOffsetMilliseconds": 36_000_000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }
        )

    async def token_info(self, request: Request) -> Response:
        token = request.path_params["token"]
        if self.sandbox.access_token_state(self.name, token) != "ok":
            return self._error(
                404, "Access token not found or expired", category="OBJECT_NOT_FOUND"
            )
        _, expires = self.sandbox.access_tokens[token]
        remaining = max(int(expires - datetime.now(UTC).timestamp()), 0)
        return JSONResponse(
            {
                "token": token,
                "user": "owner@sandbox.zixly.test",
                "hub_domain": f"sandbox-{self.portal}.hubspot.test",
                "scopes": ["oauth", "crm.objects.deals.read"],
                "hub_id": self.portal,
                "app_id": 1_000_001,
                "expires_in": remaining,
                "user_id": 5_000_001,
                "token_type": "access",
            }
        )
