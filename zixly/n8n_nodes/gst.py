"""GST at 10%: the GST in an amount, rounded per invoice to the cent, half a cent up
(A New Tax System (Goods and Services Tax) Act 1999 s9-90).

For an invoice of several supplies the law allows either rounding once on the invoice
total or rounding each line and adding; ``Rounding`` picks which.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from decimal import Decimal

from zixly.n8n_nodes.money import Money, money, to_cent_half_up

RATE = Decimal("0.10")
_INCLUSIVE_DIVISOR = Decimal(11)  # GST in a GST-inclusive amount is amount / 11


class Rounding(enum.StrEnum):
    INVOICE_TOTAL = "invoice_total"  # add the lines, round the GST once
    EACH_LINE = "each_line"  # round the GST of each line, then add


def gst_from_inclusive(amount: Money) -> Decimal:
    """The GST contained in a GST-inclusive amount."""
    return to_cent_half_up(money(amount) / _INCLUSIVE_DIVISOR)


def gst_from_exclusive(amount: Money) -> Decimal:
    """The GST to add to a GST-exclusive amount."""
    return to_cent_half_up(money(amount) * RATE)


def invoice_gst(
    lines: Iterable[Money],
    *,
    prices_include_gst: bool,
    rounding: Rounding = Rounding.INVOICE_TOTAL,
) -> Decimal:
    amounts = [money(line, field=f"lines[{i}]") for i, line in enumerate(lines)]
    if rounding is Rounding.INVOICE_TOTAL:
        return to_cent_half_up(_exact_gst(sum(amounts, Decimal(0)), prices_include_gst))
    return sum(
        (to_cent_half_up(_exact_gst(a, prices_include_gst)) for a in amounts), Decimal("0.00")
    )


def _exact_gst(amount: Decimal, prices_include_gst: bool) -> Decimal:
    return amount / _INCLUSIVE_DIVISOR if prices_include_gst else amount * RATE
