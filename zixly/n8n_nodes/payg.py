"""PAYG withholding by the Schedule 1 formulas (NAT 1004), payments from 1 July 2024
(unchanged from 1 July 2025 per the ATO software developers page).

Weekly: y = a*x - b with x = whole dollars of weekly earnings + $0.99, y rounded to the
nearest dollar (50 cents up); a negative y (scale 1 below $1 a week) withholds nothing.
Other periods are converted to weekly earnings and back as in the ATO "Working out the
weekly earnings":
- fortnightly: halve, drop cents, weekly amount x 2;
- monthly: add 1 cent if the cents are 33, x 3 / 13, drop cents, weekly amount x 13 / 3
  rounded to the dollar;
- quarterly: / 13, drop cents, weekly amount x 13.

Coefficients: ATO "Schedule 1 - Statement of formulas for calculating amounts to be
withheld", page "Coefficients to use in formulas for withholding from weekly payments"
(published 16 June 2024, ato.gov.au/tax-rates-and-codes/payg-withholding-schedule-1-
statement-of-formulas-for-calculating-amounts-to-be-withheld/coefficients-to-use-in-
formulas-for-withholding-from-weekly-payments): scale 1 "if the tax-free threshold isn't
claimed in Tax file number declaration", scale 2 "if the employee claimed the tax-free
threshold". The negative b of scale 1's third row is the ATO's ("This is intentional").
Scales 3-6 (foreign residents, no TFN, Medicare levy exemptions) and tax offsets / levy
adjustments are not implemented.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any, NamedTuple, TypeVar

from zixly.core.errors import ValidationError
from zixly.n8n_nodes.money import Money, drop_cents, money, to_dollar_half_up


class Period(enum.StrEnum):
    WEEKLY = "weekly"
    FORTNIGHTLY = "fortnightly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


class Scale(enum.IntEnum):
    NO_TAX_FREE_THRESHOLD = 1
    TAX_FREE_THRESHOLD = 2


class Bracket(NamedTuple):
    """One row of a scale: weekly earnings (x) less than ``below`` (None: "& over")."""

    below: Decimal | None
    a: Decimal
    b: Decimal


_D = Decimal
# Source of both tables: ATO Schedule 1 (NAT 1004) "Coefficients to use in formulas for
# withholding from weekly payments", published 16 June 2024 (see the module docstring).
# Scale 1: the tax-free threshold is not claimed.
_SCALE_1 = (
    Bracket(_D(150), _D("0.1600"), _D("0.1600")),
    Bracket(_D(371), _D("0.2117"), _D("7.7550")),
    Bracket(_D(515), _D("0.1890"), _D("-0.6702")),
    Bracket(_D(932), _D("0.3227"), _D("68.2367")),
    Bracket(_D(2246), _D("0.3200"), _D("65.7202")),
    Bracket(_D(3303), _D("0.3900"), _D("222.9510")),
    Bracket(None, _D("0.4700"), _D("487.2587")),
)
# Scale 2: the employee claimed the tax-free threshold (nothing below $361 a week).
_SCALE_2 = (
    Bracket(_D(361), _D(0), _D(0)),
    Bracket(_D(500), _D("0.1600"), _D("57.8462")),
    Bracket(_D(625), _D("0.2600"), _D("107.8462")),
    Bracket(_D(721), _D("0.1800"), _D("57.8462")),
    Bracket(_D(865), _D("0.1890"), _D("64.3365")),
    Bracket(_D(1282), _D("0.3227"), _D("180.0385")),
    Bracket(_D(2596), _D("0.3200"), _D("176.5769")),
    Bracket(_D(3653), _D("0.3900"), _D("358.3077")),
    Bracket(None, _D("0.4700"), _D("650.6154")),
)
# Effective for payments made on or after this date (the tables' "from 1 July 2024").
EFFECTIVE_FROM = dt.date(2024, 7, 1)
COEFFICIENTS: Mapping[Scale, tuple[Bracket, ...]] = MappingProxyType(
    {Scale.NO_TAX_FREE_THRESHOLD: _SCALE_1, Scale.TAX_FREE_THRESHOLD: _SCALE_2}
)
_NINETY_NINE_CENTS = Decimal("0.99")
_E = TypeVar("_E", Period, Scale)


def _member(kind: type[_E], value: Any, field: str) -> _E:
    """``value`` as a member of ``kind``; a typed error (not a silent default) otherwise."""
    try:
        return kind(value)
    except ValueError:
        known = ", ".join(str(m.value) for m in kind)
        raise ValidationError(
            f"unknown {field} {value!r} (expected one of: {known})", field=field
        ) from None


def weekly_withholding(earnings: Money, scale: Scale = Scale.TAX_FREE_THRESHOLD) -> Decimal:
    """Whole dollars to withhold from a weekly payment of ``earnings``."""
    x = drop_cents(money(earnings, field="earnings")) + _NINETY_NINE_CENTS
    for below, a, b in COEFFICIENTS[_member(Scale, scale, "scale")]:
        if below is None or x < below:
            y = a * x - b
            return to_dollar_half_up(y) if y > 0 else Decimal(0)
    raise AssertionError("the last row has no upper bound")  # pragma: no cover


def withholding(
    earnings: Money, period: Period, scale: Scale = Scale.TAX_FREE_THRESHOLD
) -> Decimal:
    """Whole dollars to withhold from one payment of ``earnings`` for ``period``."""
    period = _member(Period, period, "period")
    amount = money(earnings, field="earnings")
    if period is Period.WEEKLY:
        return weekly_withholding(amount, scale)
    if period is Period.FORTNIGHTLY:
        return weekly_withholding(drop_cents(amount / 2), scale) * 2
    if period is Period.QUARTERLY:
        return weekly_withholding(drop_cents(amount / 13), scale) * 13
    if amount % 1 == Decimal("0.33"):
        amount += Decimal("0.01")
    weekly = weekly_withholding(drop_cents(amount * 3 / 13), scale)
    return to_dollar_half_up(weekly * 13 / 3)
