"""PAYG withholding by the Schedule 1 formulas (NAT 1004), payments from 1 July 2024
(unchanged from 1 July 2025 per the ATO software developers page).

Weekly: y = a*x - b with x = whole dollars of weekly earnings + $0.99, y rounded to the
nearest dollar (50 cents up). Other periods are converted to weekly earnings and back as
in the ATO "Working out the weekly earnings":
- fortnightly: halve, drop cents, weekly amount x 2;
- monthly: add 1 cent if the cents are 33, x 3 / 13, drop cents, weekly amount x 13 / 3
  rounded to the dollar;
- quarterly: / 13, drop cents, weekly amount x 13.
Only scale 2 (tax-free threshold claimed) is implemented: scale 1's 2024 coefficients
could not be sourced, so it raises UnsupportedScaleError rather than guess.
"""

from __future__ import annotations

import enum
from decimal import Decimal

from zixly.errors import ZixlyError
from zixly.n8n_nodes.money import Money, drop_cents, money, to_dollar_half_up


class Period(enum.StrEnum):
    WEEKLY = "weekly"
    FORTNIGHTLY = "fortnightly"
    MONTHLY = "monthly"
    QUARTERLY = "quarterly"


class Scale(enum.IntEnum):
    NO_TAX_FREE_THRESHOLD = 1
    TAX_FREE_THRESHOLD = 2


class UnsupportedScaleError(ZixlyError, NotImplementedError):
    code = "NOT_IMPLEMENTED"
    http_status = 501


# (weekly earnings less than, a, b); None = "and over". Scale 2, from 1 July 2024.
_D = Decimal
_SCALE_2: tuple[tuple[Decimal | None, Decimal, Decimal], ...] = (
    (_D(361), _D(0), _D(0)),
    (_D(500), _D("0.1600"), _D("57.8462")),
    (_D(625), _D("0.2600"), _D("107.8462")),
    (_D(721), _D("0.1800"), _D("57.8462")),
    (_D(865), _D("0.1890"), _D("64.3365")),
    (_D(1282), _D("0.3227"), _D("180.0385")),
    (_D(2596), _D("0.3200"), _D("176.5769")),
    (_D(3653), _D("0.3900"), _D("358.3077")),
    (None, _D("0.4700"), _D("650.6154")),
)
_COEFFICIENTS = {Scale.TAX_FREE_THRESHOLD: _SCALE_2}
_NINETY_NINE_CENTS = Decimal("0.99")


def _coefficients(scale: Scale) -> tuple[tuple[Decimal | None, Decimal, Decimal], ...]:
    try:
        return _COEFFICIENTS[scale]
    except KeyError:
        raise UnsupportedScaleError(
            f"Schedule 1 scale {int(scale)} is not implemented (coefficients not sourced)",
            scale=int(scale),
        ) from None


def weekly_withholding(earnings: Money, scale: Scale = Scale.TAX_FREE_THRESHOLD) -> Decimal:
    """Whole dollars to withhold from a weekly payment of ``earnings``."""
    table = _coefficients(scale)
    x = drop_cents(money(earnings, field="earnings")) + _NINETY_NINE_CENTS
    for below, a, b in table:
        if below is None or x < below:
            return max(to_dollar_half_up(a * x - b), Decimal(0))
    raise AssertionError("the last row has no upper bound")  # pragma: no cover


def withholding(
    earnings: Money, period: Period, scale: Scale = Scale.TAX_FREE_THRESHOLD
) -> Decimal:
    """Whole dollars to withhold from one payment of ``earnings`` for ``period``."""
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
