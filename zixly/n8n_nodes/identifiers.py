"""Check digits for Australian business identifiers (ABN, ACN/ARBN/ARSN, TFN).

Sources: ABR "Format of the ABN" (abr.business.gov.au/Help/AbnFormat); ASIC "Australian
Company Number (ACN) Check Digit" (ARBN and ARSN use the same formula); the TFN check is
de facto (python-stdnum ``stdnum/au/tfn.py``), not published by the ATO. Only 9-digit
TFNs are checked. Spaces are accepted anywhere; nothing else is stripped.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Reason(enum.StrEnum):
    NON_DIGITS = "non_digits"
    WRONG_LENGTH = "wrong_length"
    CHECK_DIGIT = "check_digit"
    SUBSTITUTE_CODE = "substitute_code"


class TfnSubstitute(enum.StrEnum):
    """Payroll codes quoted in place of a TFN; they are not TFNs."""

    NOT_QUOTED = "000000000"
    APPLIED_FOR = "111111111"
    UNDER_18 = "333333333"  # under 18 and earning no more than $350 a week
    PENSIONER = "444444444"
    QUOTED_WITH_LETTERS = "987654321"


@dataclass(frozen=True, slots=True)
class IdentifierResult:
    kind: str
    valid: bool
    digits: str  # the input without spaces (kept even when invalid, for messages)
    reason: Reason | None = None
    substitute: TfnSubstitute | None = None


_ABN_WEIGHTS = (10, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19)
_ACN_WEIGHTS = (8, 7, 6, 5, 4, 3, 2, 1)
_TFN_WEIGHTS = (1, 4, 3, 7, 5, 8, 6, 9, 10)
_ABN_MODULUS = 89
_TFN_MODULUS = 11


def _shape(kind: str, value: str, length: int) -> IdentifierResult | list[int]:
    """The digits as ints, or the invalid result explaining why there are none."""
    digits = value.replace(" ", "")
    if digits and not (digits.isascii() and digits.isdigit()):
        return IdentifierResult(kind, False, digits, Reason.NON_DIGITS)
    if len(digits) != length:
        return IdentifierResult(kind, False, digits, Reason.WRONG_LENGTH)
    return [int(d) for d in digits]


def _result(kind: str, digits: list[int], ok: bool) -> IdentifierResult:
    text = "".join(map(str, digits))
    return IdentifierResult(kind, ok, text, None if ok else Reason.CHECK_DIGIT)


def validate_abn(value: str) -> IdentifierResult:
    shaped = _shape("ABN", value, 11)
    if isinstance(shaped, IdentifierResult):
        return shaped
    adjusted = [shaped[0] - 1, *shaped[1:]]
    total = sum(w * d for w, d in zip(_ABN_WEIGHTS, adjusted, strict=True))
    return _result("ABN", shaped, total % _ABN_MODULUS == 0)


def validate_acn(value: str, *, kind: str = "ACN") -> IdentifierResult:
    shaped = _shape(kind, value, 9)
    if isinstance(shaped, IdentifierResult):
        return shaped
    total = sum(w * d for w, d in zip(_ACN_WEIGHTS, shaped[:8], strict=True))
    check = (10 - total % 10) % 10
    return _result(kind, shaped, check == shaped[8])


def validate_arbn(value: str) -> IdentifierResult:
    return validate_acn(value, kind="ARBN")


def validate_arsn(value: str) -> IdentifierResult:
    return validate_acn(value, kind="ARSN")


def tfn_substitute(value: str) -> TfnSubstitute | None:
    """The payroll substitute code ``value`` is, if it is one."""
    try:
        return TfnSubstitute(value.replace(" ", ""))
    except ValueError:
        return None


def validate_tfn(value: str) -> IdentifierResult:
    """Substitute codes come back invalid with reason SUBSTITUTE_CODE (000 000 000 would
    otherwise pass the check digit)."""
    substitute = tfn_substitute(value)
    if substitute is not None:
        return IdentifierResult("TFN", False, substitute.value, Reason.SUBSTITUTE_CODE, substitute)
    shaped = _shape("TFN", value, 9)
    if isinstance(shaped, IdentifierResult):
        return shaped
    total = sum(w * d for w, d in zip(_TFN_WEIGHTS, shaped, strict=True))
    return _result("TFN", shaped, total % _TFN_MODULUS == 0)
