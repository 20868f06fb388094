"""Shared GraphQL inputs and their conversion to validated domain values."""

from __future__ import annotations

import datetime as dt

import strawberry

from zixly.core.errors import ValidationError
from zixly.domain.ranges import DateRange
from zixly.graphql.context import Context


@strawberry.input(description="An inclusive range of calendar dates (ISO 8601, YYYY-MM-DD).")
class DateRangeInput:
    start: dt.date
    end: dt.date

    def checked(self, ctx: Context) -> DateRange:
        return DateRange.checked(self.start, self.end, max_days=ctx.settings.max_range_days)


def checked_text(value: str, field: str, *, max_length: int, min_length: int = 1) -> str:
    """``value`` stripped of surrounding blanks, when its length is within bounds."""
    stripped = value.strip()
    if not min_length <= len(stripped) <= max_length:
        raise ValidationError(
            f"{field} must be {min_length} to {max_length} characters",
            field=field,
            min_length=min_length,
            max_length=max_length,
        )
    return stripped
