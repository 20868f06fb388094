"""Date, DateTime and Decimal as Strawberry's scalars, bounded to what PostgreSQL stores.

The names, descriptions and wire formats are Strawberry's own (the SDL does not change);
coercion additionally refuses what ``zixly.core.bounds`` excludes: dates and instants
outside the documented range (year 1 would reach PostgreSQL as ``-infinity``), and decimals
that are not finite or whose digits or exponent no column takes (``1E+999999999999``
overflows Python's decimal context as soon as anything computes with it). A refusal is a
GraphQL error with ``extensions.code`` ``VALIDATION_ERROR``; ``zixly.graphql.error_codes``
adds the variable's path or the literal's argument as ``field``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal

from strawberry.schema.types.base_scalars import (
    DateDefinition,
    DateTimeDefinition,
    DecimalDefinition,
)
from strawberry.types.scalar import ScalarDefinition

from zixly.core.bounds import OutOfBounds, check_date, check_instant
from zixly.core.errors import ValidationError

# Wider than any column (NUMERIC(14, x)): the resolvers check the column's own precision
# and scale and name the field; this only keeps absurd values out of decimal arithmetic.
MAX_DECIMAL_DIGITS = 40
MAX_DECIMAL_EXPONENT = 40


def _refused(type_name: str, reason: str) -> ValidationError:
    # Not a GraphQLError: graphql-core then reports it with the value's location (a literal's
    # field is found from it) and keeps it as the original error, whose code it copies.
    return ValidationError(f"{type_name} {reason}")


def _date(value: object) -> object:
    parsed = DateDefinition.parse_value(value)  # type: ignore[misc]
    try:
        # a datetime is a date; Strawberry's Date parser returns a plain date
        return check_date(parsed) if isinstance(parsed, dt.date) else parsed
    except OutOfBounds as bad:
        raise _refused("Date", str(bad)) from None


def _datetime(value: object) -> object:
    parsed = DateTimeDefinition.parse_value(value)  # type: ignore[misc]
    if not isinstance(parsed, dt.datetime):
        return parsed
    try:
        check_instant(parsed)
    except OutOfBounds as bad:
        raise _refused("DateTime", str(bad)) from None
    return parsed


def _decimal(value: object) -> object:
    if isinstance(value, str) and len(value) > 2 * MAX_DECIMAL_DIGITS:
        raise _refused("Decimal", f"must have at most {MAX_DECIMAL_DIGITS} digits")
    parsed = DecimalDefinition.parse_value(value)  # type: ignore[misc]
    if not isinstance(parsed, Decimal):
        return parsed
    if not parsed.is_finite():
        raise _refused("Decimal", "must be a finite number")
    digits = parsed.as_tuple()
    exponent = int(digits.exponent)
    if (
        len(digits.digits) > MAX_DECIMAL_DIGITS
        or not -MAX_DECIMAL_EXPONENT <= exponent <= MAX_DECIMAL_EXPONENT
    ):
        raise _refused(
            "Decimal",
            f"must have at most {MAX_DECIMAL_DIGITS} digits and an exponent within "
            f"±{MAX_DECIMAL_EXPONENT}",
        )
    return parsed


def _bounded(definition: ScalarDefinition, parse: Callable[[object], object]) -> ScalarDefinition:
    return ScalarDefinition(
        name=definition.name,
        description=definition.description,
        specified_by_url=definition.specified_by_url,
        serialize=definition.serialize,
        parse_value=parse,
        parse_literal=None,  # graphql-core parses literals through parse_value
        origin=definition.origin,
    )


SCALAR_OVERRIDES: dict[object, ScalarDefinition] = {
    dt.date: _bounded(DateDefinition, _date),
    dt.datetime: _bounded(DateTimeDefinition, _datetime),
    Decimal: _bounded(DecimalDefinition, _decimal),
}
