"""Ids as clients send them (GraphQL ``ID`` arguments, query parameters): a UUID, else a
typed ``VALIDATION_FAILED`` naming the field."""

from __future__ import annotations

import uuid

from zixly.core.errors import ValidationError


def parse_id(value: str | None, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except (ValueError, TypeError) as exc:
        raise ValidationError(f"{field} is not a valid id", field=field) from exc


def optional_id(value: str | None, field: str) -> uuid.UUID | None:
    return None if value is None else parse_id(value, field)
