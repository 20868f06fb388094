"""The rule tables as JSON for the n8n community-node package (``package/``).

The n8n nodes compute in JavaScript (n8n cannot import Python), but the numbers they compute
with (GST rate, identifier weights, PAYG coefficients, SG rates and bases, due-date rules)
must not be typed twice: this module serialises this library's tables into
``package/lib/au-rules-data.json``, which the nodes ``require``. A test fails when the
committed file differs from what this module produces, so a table change here that is not
re-exported cannot ship.

    python -m zixly.n8n_nodes.export           # rewrite the JSON file
    python -m zixly.n8n_nodes.export --check   # exit 1 if it is out of date

Decimals travel as strings (never JSON numbers) so no float ever holds a rate or a cent.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

from zixly.n8n_nodes import gst, identifiers, payg, super_guarantee

PACKAGE_DIR = Path(__file__).resolve().parent / "package"
DATA_FILE = PACKAGE_DIR / "lib" / "au-rules-data.json"

PAYG_SOURCE = (
    "ATO Schedule 1 - Statement of formulas for calculating amounts to be withheld (NAT 1004), "
    "'Coefficients to use in formulas for withholding from weekly payments', "
    "published 16 June 2024"
)


def _decimal(value: Decimal) -> str:
    return str(value)


def rules_data() -> dict[str, Any]:
    """Every table the nodes need, in a stable JSON-ready shape."""
    return {
        "generatedBy": "python -m zixly.n8n_nodes.export (do not edit by hand)",
        "gst": {"rate": _decimal(gst.RATE)},
        "identifiers": {
            "abn": {
                "weights": list(identifiers._ABN_WEIGHTS),
                "modulus": identifiers._ABN_MODULUS,
            },
            "acn": {"weights": list(identifiers._ACN_WEIGHTS)},
            "tfn": {
                "weights": list(identifiers._TFN_WEIGHTS),
                "modulus": identifiers._TFN_MODULUS,
            },
            "tfnSubstitutes": {m.value: m.name.lower() for m in identifiers.TfnSubstitute},
        },
        "payg": {
            "effectiveFrom": payg.EFFECTIVE_FROM.isoformat(),
            "source": PAYG_SOURCE,
            "scales": {
                str(int(scale)): [
                    {
                        "lessThan": None if row.below is None else int(row.below),
                        "a": _decimal(row.a),
                        "b": _decimal(row.b),
                    }
                    for row in rows
                ]
                for scale, rows in sorted(payg.COEFFICIENTS.items())
            },
        },
        "superGuarantee": {
            "rates": {str(fy): _decimal(r) for fy, r in sorted(super_guarantee._SG_RATES.items())},
            "rateFrom": {
                "financialYear": super_guarantee._SG_RATE_FROM[0],
                "rate": _decimal(super_guarantee._SG_RATE_FROM[1]),
            },
            "maxContributionBasePerQuarter": {
                str(fy): _decimal(base)
                for fy, base in sorted(super_guarantee._MAX_BASE_PER_QUARTER.items())
            },
            "paydaySuperStart": super_guarantee.PAYDAY_SUPER_START.isoformat(),
            "quarterlyDueDay": super_guarantee.QUARTERLY_DUE_DAY,
        },
    }


def render() -> str:
    return json.dumps(rules_data(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is stale")
    args = parser.parse_args(argv)
    text = render()
    current = DATA_FILE.read_text() if DATA_FILE.is_file() else None
    if args.check:
        if current != text:
            print(f"{DATA_FILE} is out of date: run python -m zixly.n8n_nodes.export")
            return 1
        return 0
    if current != text:
        DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
        DATA_FILE.write_text(text)
        print(f"wrote {DATA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
