"""Checked money input shared by the GST, BAS and PAYG rules.

Amounts are ``Decimal`` dollars with at most two decimal places. Floats are refused: a
float cannot hold most cent values exactly, so accepting one would hide rounding errors
in exactly the place these rules exist to get right.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, InvalidOperation

from zixly.core.errors import ValidationError

CENT = Decimal("0.01")
DOLLAR = Decimal("1")

Money = Decimal | int | str


class InvalidAmountError(ValidationError):
    """A money input that is not a finite, non-negative amount of whole cents."""

    def __init__(self, message: str, *, field: str, reason: str) -> None:
        super().__init__(message, field=field, reason=reason)
        self.field = field
        self.reason = reason


def money(value: Money, *, field: str = "amount") -> Decimal:
    """Return ``value`` as a Decimal, or raise InvalidAmountError saying why not."""
    if isinstance(value, bool) or not isinstance(value, Decimal | int | str):
        raise InvalidAmountError(
            f"{field} must be a Decimal, int or decimal string, not {type(value).__name__}",
            field=field,
            reason="type",
        )
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise InvalidAmountError(
            f"{field} is not a number: {value!r}", field=field, reason="not_a_number"
        ) from None
    if not amount.is_finite():
        raise InvalidAmountError(f"{field} must be finite", field=field, reason="not_finite")
    if amount < 0:
        raise InvalidAmountError(f"{field} must not be negative", field=field, reason="negative")
    if amount != amount.quantize(CENT, rounding=ROUND_DOWN):
        raise InvalidAmountError(
            f"{field} has more than two decimal places", field=field, reason="precision"
        )
    return amount.quantize(CENT)


def to_cent_half_up(value: Decimal) -> Decimal:
    return value.quantize(CENT, rounding=ROUND_HALF_UP)


def to_dollar_half_up(value: Decimal) -> Decimal:
    return value.quantize(DOLLAR, rounding=ROUND_HALF_UP)


def drop_cents(value: Decimal) -> Decimal:
    """Truncate towards zero to whole dollars (``$8,496.73`` -> ``$8,496``)."""
    return value.quantize(DOLLAR, rounding=ROUND_DOWN)
