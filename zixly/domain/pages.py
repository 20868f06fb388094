"""Keyset pagination shared by the repositories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_next: bool


def clamp_first(first: int | None, *, default: int, maximum: int) -> int:
    from zixly.core.errors import ValidationError

    if first is None:
        return min(default, maximum)
    if first < 1:
        raise ValidationError("first must be at least 1", field="first")
    if first > maximum:
        raise ValidationError(
            f"first may be at most {maximum}", field="first", max_page_size=maximum
        )
    return first


def split_page(rows: list[T], limit: int) -> Page[T]:
    """Rows were fetched with ``limit + 1`` to learn whether another page follows."""
    return Page(items=rows[:limit], has_next=len(rows) > limit)
