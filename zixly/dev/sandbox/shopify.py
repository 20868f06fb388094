"""Shopify's Admin REST API in the sandbox: ``shop.json`` and ``orders.json``.

Shapes follow the Admin REST API (docs/au-rules-and-provider-apis.md): the access token
travels in ``X-Shopify-Access-Token``; ``orders.json`` lists open orders unless ``status``
says otherwise (``any`` for all), newest first, ``limit`` 50 by default and at most 250,
money as strings in the shop's currency plus ``*_set`` objects holding ``shop_money`` and
``presentment_money`` (what the customer paid in, here sometimes NZD or USD), times with
the shop's UTC offset. Pages are cursors: the ``Link`` header (RFC 8288) names the
``rel="next"`` (and ``rel="previous"``) URL with a ``page_info``, and a request carrying
``page_info`` may add only ``limit`` and ``fields``.

Limits: a leaky bucket of 40 calls per shop draining 2 a second; every answer says its
level in ``X-Shopify-Shop-Api-Call-Limit: n/40``, and a full bucket answers 429 with
``Retry-After: 2.0``.

Orders are generated per shop-local day (Australia/Sydney, so +10:00 or +11:00 and
mornings that fall on the previous UTC day), GST-inclusive, with refunds, voids and
cancellations.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zixly.dev.sandbox.common import (
    ApiFault,
    LeakyBucket,
    ProviderApi,
    decode_cursor,
    encode_cursor,
    gst_in,
    money,
    rng,
)

SHOP_ZONE = ZoneInfo("Australia/Sydney")
SHOP_CURRENCY = "AUD"
# Presentment currencies and what one AUD buys in them (fixed in the sandbox).
PRESENTMENT = (
    ("AUD", Decimal(1), 0.8),
    ("NZD", Decimal("1.09"), 0.12),
    ("USD", Decimal("0.65"), 0.08),
)
FINANCIAL = (
    ("paid", 0.86),
    ("pending", 0.03),
    ("authorized", 0.02),
    ("partially_refunded", 0.03),
    ("refunded", 0.04),
    ("voided", 0.02),
)
STATUSES = ("open", "closed", "cancelled", "any")
DEFAULT_LIMIT = 50
MAX_LIMIT = 250
VERSION = re.compile(r"^\d{4}-\d{2}$")
FILTERS = (
    "status",
    "created_at_min",
    "created_at_max",
    "updated_at_min",
    "updated_at_max",
    "financial_status",
    "since_id",
)


@dataclass(frozen=True)
class Order:
    id: int
    number: int
    created_at: datetime  # aware, in the shop's zone
    total: Decimal  # shop money (AUD), GST inclusive
    shipping: Decimal
    discount: Decimal
    presentment: str
    rate: Decimal
    financial_status: str
    cancelled_at: datetime | None
    closed_at: datetime | None

    @property
    def subtotal(self) -> Decimal:
        return self.total - self.shipping

    @property
    def presentment_total(self) -> Decimal:
        return money(self.total * self.rate)


def shop_name(seed: int) -> str:
    return rng(seed, "shopify-shop").choice(
        ("Wattle & Wool", "Bondi Bean Co", "Kangaroo Island Honey", "Lorikeet Living")
    )


def local_stamp(moment: datetime) -> str:
    return moment.astimezone(SHOP_ZONE).isoformat(timespec="seconds")


@cache
def orders(seed: int, today: date, history_days: int) -> tuple[Order, ...]:
    """Every order of the shop, oldest first, up to the end of yesterday (shop time)."""
    r = rng(seed, "shopify-orders", today.isoformat())
    made: list[Order] = []
    next_id = 5_700_000_000_000 + r.randrange(10**9)
    number = 1000
    for back in range(history_days, 0, -1):  # whole days, up to yesterday
        day = today - timedelta(days=back)
        stamps = sorted(
            datetime.combine(day, time(7, 0), tzinfo=SHOP_ZONE)
            + timedelta(seconds=r.randrange(16 * 3600))
            for _ in range(r.randint(25, 65))
        )
        for created in stamps:
            next_id += r.randint(1000, 90_000)
            number += 1
            subtotal = money(Decimal(str(18 + r.random() * 330)))
            shipping = Decimal(r.choice(("0.00", "9.95", "14.95")))
            discount = money(subtotal * Decimal("0.1")) if r.random() < 0.12 else Decimal(0)
            currency, rate, _ = r.choices(PRESENTMENT, [w for _, _, w in PRESENTMENT])[0]
            status = r.choices([s for s, _ in FINANCIAL], [w for _, w in FINANCIAL])[0]
            cancelled = None
            if status == "voided" or (status == "refunded" and r.random() < 0.5):
                cancelled = created + timedelta(hours=r.randint(1, 48))
            closed = None
            if cancelled is None and status == "paid" and created.date() < today - timedelta(14):
                closed = created + timedelta(days=5)
            made.append(
                Order(
                    id=next_id,
                    number=number,
                    created_at=created,
                    total=subtotal - discount + shipping,
                    shipping=shipping,
                    discount=discount,
                    presentment=currency,
                    rate=rate,
                    financial_status=status,
                    cancelled_at=cancelled,
                    closed_at=closed,
                )
            )
    return tuple(made)


def _set(shop: Decimal, order: Order) -> dict[str, Any]:
    return {
        "shop_money": {"amount": f"{shop:.2f}", "currency_code": SHOP_CURRENCY},
        "presentment_money": {
            "amount": f"{money(shop * order.rate):.2f}",
            "currency_code": order.presentment,
        },
    }


def order_json(order: Order) -> dict[str, Any]:
    tax = gst_in(order.total)
    updated = order.cancelled_at or order.closed_at or order.created_at
    return {
        "id": order.id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order.id}",
        "name": f"#{order.number}",
        "order_number": order.number,
        "created_at": local_stamp(order.created_at),
        "processed_at": local_stamp(order.created_at),
        "updated_at": local_stamp(updated),
        "cancelled_at": local_stamp(order.cancelled_at) if order.cancelled_at else None,
        "closed_at": local_stamp(order.closed_at) if order.closed_at else None,
        "currency": SHOP_CURRENCY,
        "presentment_currency": order.presentment,
        "total_price": f"{order.total:.2f}",
        "subtotal_price": f"{order.subtotal:.2f}",
        "total_tax": f"{tax:.2f}",
        "total_discounts": f"{order.discount:.2f}",
        "taxes_included": True,
        "financial_status": order.financial_status,
        "fulfillment_status": "fulfilled" if order.closed_at else None,
        "test": False,
        "source_name": "web",
        "total_price_set": _set(order.total, order),
        "subtotal_price_set": _set(order.subtotal, order),
        "total_tax_set": _set(tax, order),
    }


def _moment(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=SHOP_ZONE)


def _matches(order: Order, filters: dict[str, str]) -> bool:
    status = filters.get("status", "open")
    if status == "open" and (order.cancelled_at or order.closed_at):
        return False
    if status == "closed" and order.closed_at is None:
        return False
    if status == "cancelled" and order.cancelled_at is None:
        return False
    if "created_at_min" in filters and order.created_at < _moment(filters["created_at_min"]):
        return False
    if "created_at_max" in filters and order.created_at > _moment(filters["created_at_max"]):
        return False
    updated = order.cancelled_at or order.closed_at or order.created_at
    if "updated_at_min" in filters and updated < _moment(filters["updated_at_min"]):
        return False
    if "updated_at_max" in filters and updated > _moment(filters["updated_at_max"]):
        return False
    wanted = filters.get("financial_status", "any")
    if wanted not in ("any", order.financial_status):
        return False
    return not ("since_id" in filters and order.id <= int(filters["since_id"]))


class ShopifyApi(ProviderApi):
    name = "shopify"

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        cfg = self.config
        self.bucket = LeakyBucket(cfg.shopify_bucket, cfg.shopify_leak_per_second)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/admin/api/{version}/shop.json", self.endpoint(self.shop), methods=["GET"]),
            Route("/admin/api/{version}/orders.json", self.endpoint(self.orders), methods=["GET"]),
        ]

    def token_of(self, request: Request) -> str:
        return request.headers.get("x-shopify-access-token", "")

    # --- refusals, in Shopify's words -------------------------------------------------------------
    def unauthorized(self, state: str) -> Response:
        return JSONResponse(
            {
                "errors": "[API] Invalid API key or access token "
                "(unrecognized login or wrong password)"
            },
            401,
        )

    def refused(self, fault: ApiFault) -> Response:
        if fault.status != 429:
            return JSONResponse({"errors": "an injected failure"}, fault.status)
        return self._too_many(fault.retry_after or 2.0)

    def _too_many(self, retry_after: float) -> Response:
        return JSONResponse(
            {
                "errors": "Exceeded 2 calls per second for api client. "
                "Reduce request rates to resume uninterrupted service."
            },
            429,
            headers={
                "Retry-After": f"{retry_after:.1f}",
                "X-Shopify-Shop-Api-Call-Limit": f"{self.config.shopify_bucket}/"
                f"{self.config.shopify_bucket}",
            },
        )

    async def limit(self, request: Request) -> Response | None:
        if not self.bucket.take(self.token_of(request)):
            return self._too_many(2.0)
        return None

    def decorate(self, request: Request, response: Response) -> Response:
        level = min(round(self.bucket.level(self.token_of(request))), self.config.shopify_bucket)
        response.headers["X-Shopify-Shop-Api-Call-Limit"] = (
            f"{max(level, 1)}/{self.config.shopify_bucket}"
        )
        return response

    # --- endpoints ------------------------------------------------------------------------------
    def all_orders(self) -> tuple[Order, ...]:
        cfg = self.config
        return orders(cfg.seed, cfg.today, cfg.history_days)

    async def shop(self, request: Request) -> Response:
        if not VERSION.match(request.path_params["version"]):
            return JSONResponse({"errors": "Not Found"}, 404)
        name = shop_name(self.config.seed)
        handle = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        return JSONResponse(
            {
                "shop": {
                    "id": 60_000_000_000 + self.config.seed,
                    "name": name,
                    "email": f"owner@{handle}.example",
                    "domain": f"{handle}.example",
                    "myshopify_domain": f"{handle}.myshopify.com",
                    "country_code": "AU",
                    "currency": SHOP_CURRENCY,
                    "iana_timezone": "Australia/Sydney",
                    "timezone": "(GMT+10:00) Australia/Sydney",
                    "enabled_presentment_currencies": [c for c, _, _ in PRESENTMENT],
                    "taxes_included": True,
                }
            }
        )

    async def orders(self, request: Request) -> Response:
        if not VERSION.match(request.path_params["version"]):
            return JSONResponse({"errors": "Not Found"}, 404)
        query = dict(request.query_params)
        try:
            limit = int(query.get("limit", DEFAULT_LIMIT))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_LIMIT:
            return JSONResponse({"errors": {"limit": [f"must be between 1 and {MAX_LIMIT}"]}}, 400)
        fields = [f for f in query.get("fields", "").split(",") if f]
        if "page_info" in query:
            extra = set(query) - {"page_info", "limit", "fields"}
            cursor = decode_cursor(query["page_info"])
            if extra or cursor is None or not isinstance(cursor.get("pos"), int):
                return JSONResponse({"errors": {"page_info": ["Invalid value."]}}, 400)
            filters, start = dict(cursor["f"]), cursor["pos"]
        else:
            filters = {k: query[k] for k in FILTERS if k in query}
            start = 0
            if filters.get("status", "open") not in STATUSES:
                return JSONResponse({"errors": {"status": ["is not included in the list"]}}, 400)
            try:
                for key in ("created_at_min", "created_at_max", "updated_at_min", "updated_at_max"):
                    if key in filters:
                        _moment(filters[key])
            except ValueError:
                return JSONResponse({"errors": "Invalid date"}, 400)
        chosen = [o for o in reversed(self.all_orders()) if _matches(o, filters)]  # newest first
        page = chosen[start : start + limit]
        records = [order_json(o) for o in page]
        if fields:
            records = [{k: v for k, v in r.items() if k in fields} for r in records]
        links = []

        def link(position: int, rel: str) -> str:
            params: dict[str, Any] = {"limit": limit}
            if fields:
                params["fields"] = ",".join(fields)
            params["page_info"] = encode_cursor(f=filters, pos=position)
            return f'<{request.url.replace(query=urlencode(params))}>; rel="{rel}"'

        if start > 0:
            links.append(link(max(start - limit, 0), "previous"))
        if start + limit < len(chosen):
            links.append(link(start + limit, "next"))
        headers = {"Link": ", ".join(links)} if links else {}
        return JSONResponse({"orders": records}, headers=headers)
