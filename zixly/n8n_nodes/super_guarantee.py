"""Superannuation guarantee: rate by payment date, maximum contribution base, quarterly
due dates (ATO "Key super rates and thresholds"; "When to pay super").

The SG rate follows the date the contribution is paid, not the period the work was done.
Financial years start on 1 July. Only years whose figures are sourced are answered;
anything else raises SuperRuleUnavailableError instead of guessing.

Payday Super (from 1 July 2026): contributions must reach the fund within 7 business days
of each payday on "qualifying earnings" (20 business days for a new employee's first
contribution), and an annual base replaces the quarterly one. Quarterly due dates and the
quarterly base therefore stop at the April-June 2026 quarter here; the per-payday rule
needs a business-day calendar and its final form is to be checked, so it is not built yet.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from zixly.core.errors import ValidationError

PAYDAY_SUPER_START = dt.date(2026, 7, 1)

# financial year, named by the calendar year it starts in -> value
_SG_RATES = {2022: Decimal("0.105"), 2023: Decimal("0.11"), 2024: Decimal("0.115")}
_SG_RATE_FROM = (2025, Decimal("0.12"))  # 2025-26 and later
_MAX_BASE_PER_QUARTER = {2023: Decimal(62270), 2024: Decimal(65070), 2025: Decimal(62500)}
QUARTERLY_DUE_DAY = 28  # of the month after each quarter


class SuperRuleUnavailableError(ValidationError):
    """No sourced figure for that date (before our data, or replaced by Payday Super)."""


def financial_year(day: dt.date) -> int:
    """The calendar year the financial year containing ``day`` starts in (2024 = 2024-25)."""
    return day.year if day.month >= 7 else day.year - 1


def _fy_label(fy: int) -> str:
    return f"{fy}-{(fy + 1) % 100:02d}"


def sg_rate(payment_date: dt.date) -> Decimal:
    fy = financial_year(payment_date)
    from_year, rate = _SG_RATE_FROM
    if fy >= from_year:
        return rate
    try:
        return _SG_RATES[fy]
    except KeyError:
        raise SuperRuleUnavailableError(
            f"no SG rate recorded for {_fy_label(fy)}", field="payment_date"
        ) from None


def max_contribution_base(day: dt.date) -> Decimal:
    """Maximum super contribution base per quarter for the financial year of ``day``."""
    fy = financial_year(day)
    try:
        return _MAX_BASE_PER_QUARTER[fy]
    except KeyError:
        why = "Payday Super uses an annual base" if day >= PAYDAY_SUPER_START else "not recorded"
        raise SuperRuleUnavailableError(
            f"no quarterly maximum contribution base for {_fy_label(fy)}: {why}", field="date"
        ) from None


def quarterly_due_date(day: dt.date) -> dt.date:
    """The date SG for the quarter containing ``day`` is due (28 Oct/Jan/Apr/Jul)."""
    if day >= PAYDAY_SUPER_START:
        raise SuperRuleUnavailableError(
            "quarters from 1 July 2026 fall under Payday Super (due per payday)", field="date"
        )
    quarter_end_month = (day.month - 1) // 3 * 3 + 3  # 3, 6, 9 or 12
    due_month = quarter_end_month % 12 + 1
    due_year = day.year + 1 if quarter_end_month == 12 else day.year
    return dt.date(due_year, due_month, QUARTERLY_DUE_DAY)
