"""Xero's data API in the sandbox: ``GET /connections`` and the Profit and Loss report.

Shapes follow Xero's Accounting API (docs/au-rules-and-provider-apis.md and Xero's OpenAPI
description, ``ReportWithRows``): ``/connections`` lists the organisations a token may
read, and every accounting call names one in the ``xero-tenant-id`` header.
``Reports[0].Rows`` is a Header row, then Sections (Income, Less Cost of Sales, Less
Operating Expenses) of account Rows (cells carry the account id in ``Attributes``) closed by
a SummaryRow, with Gross Profit and Net Profit as plain Rows in untitled Sections; values are
strings and may be negative, and accounts (and whole sections) without activity are left
out, as Xero does.

Limits per tenant: 60 calls a minute, 5,000 a day, 5 at once; a call over one answers 429
with ``Retry-After`` (seconds) and ``X-Rate-Limit-Problem`` (minute, day or concurrent);
successful answers carry ``X-MinLimit-Remaining`` and ``X-DayLimit-Remaining``.

The books are generated per organisation and day from the seed: weekday trade, a closed
Sunday for one of them, COGS and freight as shares of sales, wages paid weekly with super
on top, rent on the first; "Other Revenue" goes negative on credit-note days.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from zixly.dev.sandbox.common import (
    ApiFault,
    DataConfig,
    ProviderApi,
    SlidingWindow,
    money,
    rng,
    seeded_uuid,
)

NAMES = (
    "Harbourside Coffee Roasters Pty Ltd",
    "Southbank Physiotherapy Pty Ltd",
    "Koala Creek Kitchens Pty Ltd",
    "Bluegum Landscaping Pty Ltd",
    "Fremantle Surf Supplies Pty Ltd",
    "Daintree Digital Pty Ltd",
)
INCOME = (("200", "Sales"), ("260", "Other Revenue"), ("270", "Interest Income"))
COST_OF_SALES = (("310", "Cost of Goods Sold"), ("315", "Freight & Courier"))
OPERATING = (
    ("400", "Advertising"),
    ("404", "Bank Fees"),
    ("445", "Light, Power, Heating"),
    ("469", "Rent"),
    ("477", "Wages and Salaries"),
    ("478", "Superannuation"),
    ("489", "Telephone & Internet"),
)
SECTIONS = (
    ("Income", "Total Income", INCOME),
    ("Less Cost of Sales", "Total Cost of Sales", COST_OF_SALES),
    ("Less Operating Expenses", "Total Operating Expenses", OPERATING),
)
MAX_REPORT_DAYS = 366


@dataclass(frozen=True)
class Organisation:
    tenant_id: str
    connection_id: str
    auth_event_id: str
    name: str
    scale: Decimal
    closed_sundays: bool
    connected_at: datetime


@cache
def organisations(seed: int, today: date) -> tuple[Organisation, ...]:
    """The two organisations every sandbox token is connected to."""
    chooser = rng(seed, "xero-orgs")
    names = chooser.sample(NAMES, 2)
    return tuple(
        Organisation(
            tenant_id=seeded_uuid(seed, "xero-tenant", index),
            connection_id=seeded_uuid(seed, "xero-connection", index),
            auth_event_id=seeded_uuid(seed, "xero-auth-event"),
            name=name,
            scale=Decimal(str(round(0.6 + chooser.random(), 2))),
            closed_sundays=index == 1,
            connected_at=datetime.combine(today - timedelta(days=30 + index), time(1, 24, 51)),
        )
        for index, name in enumerate(names)
    )


def super_rate(paid: date) -> Decimal:
    """Superannuation guarantee by payment date (ATO "Key super rates")."""
    if paid >= date(2025, 7, 1):
        return Decimal("0.12")
    if paid >= date(2024, 7, 1):
        return Decimal("0.115")
    return Decimal("0.11")


@cache
def day_amounts(
    seed: int, tenant_id: str, scale: Decimal, closed_sundays: bool, day: date
) -> dict[str, Decimal]:
    """Account code -> amount for one organisation's day (zero amounts left out)."""
    r = rng(seed, "xero-day", tenant_id, day.isoformat())
    amounts: dict[str, Decimal] = {}
    open_today = not (closed_sundays and day.weekday() == 6)
    if open_today:
        weekday = Decimal("0.45") if day.weekday() >= 5 else Decimal(1)
        sales = money(Decimal(2600) * scale * weekday * Decimal(str(0.7 + r.random() * 0.6)))
        amounts["200"] = sales
        amounts["310"] = money(sales * Decimal(str(0.36 + r.random() * 0.08)))
        amounts["315"] = money(sales * Decimal(str(0.02 + r.random() * 0.02)))
        amounts["404"] = money(sales * Decimal("0.0085"))
        if r.random() < 0.3:  # a credit note outweighs the day's other revenue
            amounts["260"] = money(Decimal(str(-40 - r.random() * 160)))
        elif r.random() < 0.5:
            amounts["260"] = money(Decimal(str(15 + r.random() * 240)))
        if r.random() < 0.6:
            amounts["400"] = money(Decimal(str(20 + r.random() * 140)) * scale)
    if day.weekday() == 3:  # weekly payroll on Thursdays, super with it
        wages = money(Decimal(4650) * scale * Decimal(str(0.95 + r.random() * 0.1)))
        amounts["477"] = wages
        amounts["478"] = money(wages * super_rate(day))
    if day.day == 1:
        amounts["469"] = money(Decimal(4200) * scale)
    if day.day == 15:
        amounts["445"] = money(Decimal(str(380 + r.random() * 220)) * scale)
    if day.day == 20:
        amounts["489"] = money(Decimal("189.95"))
    if day.day == 28:
        amounts["270"] = money(Decimal(str(4 + r.random() * 20)))
    return {code: value for code, value in amounts.items() if value != 0}


def period_amounts(seed: int, org: Organisation, start: date, end: date) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    day = start
    while day <= end:
        for code, value in day_amounts(
            seed, org.tenant_id, org.scale, org.closed_sundays, day
        ).items():
            totals[code] += value
        day += timedelta(days=1)
    return {code: value for code, value in totals.items() if value != 0}


@dataclass(frozen=True)
class Totals:
    income: Decimal
    cost_of_sales: Decimal
    operating_expenses: Decimal

    @property
    def gross_profit(self) -> Decimal:
        return self.income - self.cost_of_sales

    @property
    def net_profit(self) -> Decimal:
        return self.gross_profit - self.operating_expenses


def totals(seed: int, org: Organisation, start: date, end: date) -> Totals:
    """The report's section totals (what the P&L template must have read)."""
    amounts = period_amounts(seed, org, start, end)
    sums = [
        sum((amounts.get(code, Decimal(0)) for code, _ in accounts), Decimal(0))
        for _, _, accounts in SECTIONS
    ]
    return Totals(*sums)


def _d(value: Decimal) -> str:
    return f"{value:.2f}"


def _ms(moment: datetime) -> str:
    return f"/Date({int(moment.replace(tzinfo=UTC).timestamp() * 1000)})/"


def _long(day: date) -> str:
    return f"{day.day} {day:%B %Y}"


def profit_and_loss(
    config: DataConfig, org: Organisation, start: date, end: date
) -> dict[str, Any]:
    amounts = period_amounts(config.seed, org, start, end)
    rows: list[dict[str, Any]] = [
        {"RowType": "Header", "Cells": [{"Value": ""}, {"Value": f"{end.day} {end:%b %y}"}]}
    ]
    section_totals: dict[str, Decimal] = defaultdict(Decimal)
    for title, total_label, accounts in SECTIONS:
        section_rows = []
        for code, name in accounts:
            value = amounts.get(code)
            if value is None:
                continue
            account_id = seeded_uuid(config.seed, "xero-account", org.tenant_id, code)
            attributes = [{"Value": account_id, "Id": "account"}]
            section_rows.append(
                {
                    "RowType": "Row",
                    "Cells": [
                        {"Value": f"{name} ({code})", "Attributes": attributes},
                        {"Value": _d(value), "Attributes": attributes},
                    ],
                }
            )
            section_totals[title] += value
        if section_rows:
            section_rows.append(
                {
                    "RowType": "SummaryRow",
                    "Cells": [{"Value": total_label}, {"Value": _d(section_totals[title])}],
                }
            )
            rows.append({"RowType": "Section", "Title": title, "Rows": section_rows})
        if title == "Less Cost of Sales":
            gross = section_totals["Income"] - section_totals[title]
            rows.append(_plain("Gross Profit", gross))
    net = (
        section_totals["Income"]
        - section_totals["Less Cost of Sales"]
        - section_totals["Less Operating Expenses"]
    )
    rows.append(_plain("Net Profit", net))
    updated = datetime.combine(config.today, time(0, 0))
    return {
        "Id": seeded_uuid(config.seed, "xero-report", org.tenant_id, start, end),
        "Status": "OK",
        "ProviderName": "Zixly provider sandbox",
        "DateTimeUTC": _ms(updated),
        "Reports": [
            {
                "ReportID": "ProfitAndLoss",
                "ReportName": "Profit and Loss",
                "ReportType": "ProfitAndLoss",
                "ReportTitles": [
                    "Profit & Loss",
                    org.name,
                    f"{_long(start)} to {_long(end)}",
                ],
                "ReportDate": _long(config.today),
                "UpdatedDateUTC": _ms(updated),
                "Fields": [],
                "Rows": rows,
            }
        ],
    }


def _plain(label: str, value: Decimal) -> dict[str, Any]:
    return {
        "RowType": "Section",
        "Title": "",
        "Rows": [{"RowType": "Row", "Cells": [{"Value": label}, {"Value": _d(value)}]}],
    }


ABN_WEIGHTS = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)


def abn(seed: int, tenant_id: str) -> str:
    """A valid ABN (ABR: first digit less one, weighted sum divisible by 89), spaced."""
    r = rng(seed, "xero-abn", tenant_id)
    while True:
        body = [r.randrange(10) for _ in range(9)]
        for prefix in range(10, 100):
            digits = [prefix // 10 - 1, prefix % 10, *body]
            if sum(w * d for w, d in zip(ABN_WEIGHTS, digits, strict=True)) % 89 == 0:
                text = f"{prefix}{''.join(map(str, body))}"
                return f"{text[:2]} {text[2:5]} {text[5:8]} {text[8:]}"


def _xero_date(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0"  # Xero's 7 fractional digits


class XeroApi(ProviderApi):
    name = "xero"

    def __init__(self, sandbox: Any) -> None:
        super().__init__(sandbox)
        cfg = self.config
        self.minute = SlidingWindow(cfg.xero_per_minute, 60.0)
        self.day = SlidingWindow(cfg.xero_per_day, 86400.0)
        self.in_flight: Counter[str] = Counter()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/connections", self.endpoint(self.connections), methods=["GET"]),
            Route(
                "/api.xro/2.0/Reports/ProfitAndLoss",
                self.endpoint(self.profit_and_loss),
                methods=["GET"],
            ),
            Route("/api.xro/2.0/Organisation", self.endpoint(self.organisation), methods=["GET"]),
        ]

    def organisations(self) -> tuple[Organisation, ...]:
        return organisations(self.config.seed, self.config.today)

    # --- refusals, in Xero's words ------------------------------------------------------------
    def _problem(self, status: int, title: str, detail: str, **headers: str) -> Response:
        body: dict[str, Any] = {
            "Type": None,
            "Title": title,
            "Status": status,
            "Detail": detail,
            "Instance": seeded_uuid(self.config.seed, "instance", len(self.data.calls)),
            "Extensions": {},
        }
        return JSONResponse(body, status, headers=headers)

    def unauthorized(self, state: str) -> Response:
        detail = "TokenExpired" if state == "expired" else "AuthenticationUnsuccessful"
        return self._problem(401, "Unauthorized", detail, **{"WWW-Authenticate": "Bearer"})

    def refused(self, fault: ApiFault) -> Response:
        if fault.status != 429:
            return self._problem(fault.status, "Sandbox fault", "an injected failure")
        return self._too_many(fault.retry_after or 1.0, "minute")

    def _too_many(self, retry_after: float, problem: str) -> Response:
        return self._problem(
            429,
            "Too Many Requests",
            f"You have exceeded the {problem} rate limit",
            **{
                "Retry-After": str(max(1, math.ceil(retry_after))),
                "X-Rate-Limit-Problem": problem,
            },
        )

    # --- limits per tenant ----------------------------------------------------------------------
    async def limit(self, request: Request) -> Response | None:
        tenant = request.headers.get("xero-tenant-id")
        if tenant is None or "/api.xro/" not in request.url.path:
            return None
        if self.in_flight[tenant] >= self.config.xero_concurrent:
            return self._too_many(1.0, "concurrent")
        wait = self.day.take(tenant)
        if wait is not None:
            return self._too_many(wait, "day")
        wait = self.minute.take(tenant)
        if wait is not None:
            return self._too_many(wait, "minute")
        self.in_flight[tenant] += 1
        return None

    def decorate(self, request: Request, response: Response) -> Response:
        tenant = request.headers.get("xero-tenant-id")
        if tenant is not None and "/api.xro/" in request.url.path:
            self.in_flight[tenant] = max(self.in_flight[tenant] - 1, 0)
            response.headers["X-MinLimit-Remaining"] = str(self.minute.remaining(tenant))
            response.headers["X-DayLimit-Remaining"] = str(self.day.remaining(tenant))
            response.headers["X-AppMinLimit-Remaining"] = "9999"
        return response

    # --- endpoints ------------------------------------------------------------------------------
    async def connections(self, request: Request) -> Response:
        return JSONResponse(
            [
                {
                    "id": org.connection_id,
                    "authEventId": org.auth_event_id,
                    "tenantId": org.tenant_id,
                    "tenantType": "ORGANISATION",
                    "tenantName": org.name,
                    "createdDateUtc": _xero_date(org.connected_at),
                    "updatedDateUtc": _xero_date(org.connected_at + timedelta(seconds=2)),
                }
                for org in self.organisations()
            ]
        )

    def _organisation_of(self, request: Request) -> Organisation | None:
        tenant = request.headers.get("xero-tenant-id", "").lower()
        return next((o for o in self.organisations() if o.tenant_id == tenant), None)

    async def organisation(self, request: Request) -> Response:
        org = self._organisation_of(request)
        if org is None:
            return self._problem(403, "Forbidden", "AuthorizationUnsuccessful")
        created = datetime.combine(self.config.today - timedelta(days=900), time(0, 0))
        return JSONResponse(
            {
                "Id": seeded_uuid(self.config.seed, "xero-org-call", org.tenant_id),
                "Status": "OK",
                "ProviderName": "Zixly provider sandbox",
                "DateTimeUTC": _ms(datetime.combine(self.config.today, time(0, 0))),
                "Organisations": [
                    {
                        "OrganisationID": org.tenant_id,
                        "Name": org.name.removesuffix(" Pty Ltd"),
                        "LegalName": org.name,
                        "PaysTax": True,
                        "Version": "AU",
                        "OrganisationType": "COMPANY",
                        "BaseCurrency": "AUD",
                        "CountryCode": "AU",
                        "IsDemoCompany": False,
                        "OrganisationStatus": "ACTIVE",
                        "RegistrationNumber": abn(self.config.seed, org.tenant_id),
                        "TaxNumber": abn(self.config.seed, org.tenant_id),
                        "FinancialYearEndDay": 30,
                        "FinancialYearEndMonth": 6,
                        "SalesTaxBasis": "ACCRUALS",
                        "SalesTaxPeriod": "QUARTERLY1",
                        "Timezone": "AUSEASTERNSTANDARDTIME",
                        "OrganisationEntityType": "COMPANY",
                        "ShortCode": "!" + org.tenant_id[:5],
                        "CreatedDateUTC": _ms(created),
                    }
                ],
            }
        )

    async def profit_and_loss(self, request: Request) -> Response:
        org = self._organisation_of(request)
        if org is None:
            return self._problem(403, "Forbidden", "AuthorizationUnsuccessful")
        today = self.config.today
        try:
            start = _date(request.query_params.get("fromDate"), today.replace(day=1))
            month_end = (today.replace(day=28) + timedelta(days=4)).replace(day=1)
            end = _date(request.query_params.get("toDate"), month_end - timedelta(days=1))
        except ValueError as exc:
            return _validation(str(exc))
        if end < start:
            return _validation("toDate must not be before fromDate")
        if (end - start).days >= MAX_REPORT_DAYS:
            return _validation("The report period cannot exceed 365 days")
        return JSONResponse(profit_and_loss(self.config, org, start, end))


def _date(value: str | None, default: date) -> date:
    if value is None or value == "":
        return default
    try:
        return date.fromisoformat(value[:10])
    except ValueError:
        raise ValueError(f"'{value}' is not a valid date") from None


def _validation(message: str) -> Response:
    return JSONResponse(
        {
            "ErrorNumber": 10,
            "Type": "ValidationException",
            "Message": "A validation exception occurred",
            "Elements": [{"ValidationErrors": [{"Message": message}]}],
        },
        400,
    )
