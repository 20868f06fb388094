"""The Python library's answer to a node operation, in the n8n node's JSON shape.

``tests/au_rules_vectors.json`` is shared by the Python tests and the n8n node tests: each
vector names an operation of the "Zixly AU Rules" node, its input as the node gets it
(JSON) and the published expected values. ``evaluate`` answers the same operation with
the Python library (zixly.n8n_nodes) so the tests can check, for every vector, that
Python == published and node == Python == published. Money is formatted as the node does:
decimal strings with two places; BAS labels are whole-dollar integers.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from zixly.core.errors import ValidationError
from zixly.n8n_nodes import (
    IdentifierResult,
    Period,
    PurchaseLine,
    PurchaseTreatment,
    PurchaseUse,
    SaleLine,
    SaleTreatment,
    Scale,
    SuperRuleUnavailableError,
    bas_gst_summary,
    financial_year,
    gst_from_exclusive,
    gst_from_inclusive,
    max_contribution_base,
    quarterly_due_date,
    sg_rate,
    validate_abn,
    validate_acn,
    validate_tfn,
    withholding,
)
from zixly.n8n_nodes.money import money
from zixly.n8n_nodes.super_guarantee import PAYDAY_SUPER_START

VECTORS_FILE = Path(__file__).parent / "au_rules_vectors.json"


def load_vectors() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTORS_FILE.read_text())
    return data


def _money(value: Decimal) -> str:
    return f"{value:.2f}"


def _identifier(result: IdentifierResult) -> dict[str, Any]:
    return {
        "kind": result.kind,
        "valid": result.valid,
        "digits": result.digits,
        "reason": None if result.reason is None else result.reason.value,
        "substitute": None if result.substitute is None else result.substitute.name.lower(),
    }


def _enum(kind: type[Any], value: Any, field: str, default: Any) -> Any:
    if value in (None, ""):
        return default
    try:
        return kind(value)
    except ValueError:
        raise ValidationError(f"{field}: unknown value {value!r}", field=field) from None


def _bas(lines: list[dict[str, Any]], g7: int, g18: int) -> dict[str, Any]:
    sales: list[SaleLine] = []
    purchases: list[PurchaseLine] = []
    for i, line in enumerate(lines):
        amount = money(line["amount"], field=f"lines[{i}].amount")
        treatment_field = f"lines[{i}].treatment"
        if line.get("type") == "sale":
            treatment = _enum(
                SaleTreatment, line.get("treatment"), treatment_field, SaleTreatment.TAXABLE
            )
            sales.append(SaleLine(amount, treatment))
        elif line.get("type") == "purchase":
            purchases.append(
                PurchaseLine(
                    amount,
                    _enum(
                        PurchaseTreatment,
                        line.get("treatment"),
                        treatment_field,
                        PurchaseTreatment.TAXABLE,
                    ),
                    capital=bool(line.get("capital", False)),
                    use=_enum(
                        PurchaseUse, line.get("use"), f"lines[{i}].use", PurchaseUse.BUSINESS
                    ),
                )
            )
        else:
            raise ValidationError("type must be sale or purchase", field=f"lines[{i}].type")
    bas = bas_gst_summary(sales, purchases, g7=g7, g18=g18)
    labels = {f"g{n}": getattr(bas, f"g{n}") for n in range(1, 21)}
    return {**labels, "label1A": bas.label_1a, "label1B": bas.label_1b, "netGst": bas.net_gst}


def _super(date: str) -> dict[str, Any]:
    day = dt.date.fromisoformat(date)
    fy = financial_year(day)
    try:
        base: str | None = _money(max_contribution_base(day))
    except SuperRuleUnavailableError:
        base = None
    try:
        due: str | None = quarterly_due_date(day).isoformat()
    except SuperRuleUnavailableError:
        due = None
    return {
        "date": day.isoformat(),
        "financialYear": f"{fy}-{(fy + 1) % 100:02d}",
        "rate": str(sg_rate(day)),
        "maxContributionBasePerQuarter": base,
        "quarterlyDueDate": due,
        "paydaySuper": day >= PAYDAY_SUPER_START,
    }


def evaluate(op: str, given: dict[str, Any]) -> dict[str, Any]:
    """The Python library's result for one node operation (raises its typed errors)."""
    if op == "validateAbn":
        return _identifier(validate_abn(given["value"]))
    if op == "validateAcn":
        return _identifier(validate_acn(given["value"]))
    if op == "validateTfn":
        return _identifier(validate_tfn(given["value"]))
    if op == "gstFromInclusive":
        amount = money(given["amount"])
        gst = gst_from_inclusive(amount)
        return {
            "amount": _money(amount),
            "gst": _money(gst),
            "exclusiveAmount": _money(amount - gst),
        }
    if op == "gstFromExclusive":
        amount = money(given["amount"])
        gst = gst_from_exclusive(amount)
        return {
            "amount": _money(amount),
            "gst": _money(gst),
            "inclusiveAmount": _money(amount + gst),
        }
    if op == "basGstSummary":
        return _bas(given["lines"], given.get("g7", 0), given.get("g18", 0))
    if op == "paygWithholding":
        scale = (
            Scale.TAX_FREE_THRESHOLD if given["taxFreeThreshold"] else Scale.NO_TAX_FREE_THRESHOLD
        )
        period = given["period"]
        withheld = withholding(given["earnings"], period, scale)
        return {
            "earnings": _money(money(given["earnings"], field="earnings")),
            "period": Period(period).value,
            "scale": int(scale),
            "taxFreeThreshold": given["taxFreeThreshold"],
            "withholding": _money(withheld),
        }
    if op == "superGuarantee":
        return _super(given["date"])
    raise ValueError(f"unknown operation {op}")


__all__ = ["VECTORS_FILE", "evaluate", "load_vectors"]
