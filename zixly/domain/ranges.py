"""Validated date ranges for time-series queries."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from zixly.core.bounds import OutOfBounds, check_date
from zixly.core.errors import ValidationError


@dataclass(frozen=True)
class DateRange:
    """Inclusive on both ends."""

    start: dt.date
    end: dt.date

    @classmethod
    def checked(cls, start: dt.date, end: dt.date, *, max_days: int) -> DateRange:
        for day in (start, end):
            try:
                check_date(day)
            except OutOfBounds as bad:
                raise ValidationError(f"range {bad}", field="range") from None
        if end < start:
            raise ValidationError(
                f"range end {end.isoformat()} is before its start {start.isoformat()}",
                field="range",
            )
        days = (end - start).days + 1
        if days > max_days:
            raise ValidationError(
                f"range covers {days} days; the most one query may cover is {max_days}",
                field="range",
                max_days=max_days,
            )
        return cls(start, end)

    @property
    def end_exclusive(self) -> dt.date:
        return self.end + dt.timedelta(days=1)

    def start_datetime(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time.min, tzinfo=dt.UTC)

    def end_datetime_exclusive(self) -> dt.datetime:
        return dt.datetime.combine(self.end_exclusive, dt.time.min, tzinfo=dt.UTC)
