"""GST section of the BAS by the calculation-sheet method (ATO "GST calculation worksheet
for BAS", NAT 5107): G1..G20, 1A, 1B and net GST.

All amounts on lines are GST-inclusive where GST applies. Each input label is the sum of
its lines in cents with the cents then dropped (BAS amounts are whole dollars, cents
dropped: ATO "Complete your BAS"); derived labels follow the worksheet arithmetic on those
whole-dollar figures, and G9 (-> 1A) and G20 (-> 1B) drop the cents of the division by 11.

Adjustments: G7 and G18 are taken as given, in whole dollars, and must not be negative
(the worksheet has no negative entries); this module does not classify adjustment events,
the caller decides which label an adjustment belongs to. G17 is clamped at 0 because
dropping the cents of G10/G11 and of G13/G14/G15 separately can otherwise make it -1..-2
when every purchase is excluded; no other label can go negative. Net GST (1A - 1B) is
signed: negative means a refund.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from zixly.core.errors import ValidationError
from zixly.n8n_nodes.money import Money, drop_cents, money

_ELEVEN = Decimal(11)


class SaleTreatment(enum.StrEnum):
    TAXABLE = "taxable"
    GST_FREE = "gst_free"  # G3 other GST-free sales
    EXPORT = "export"  # G2 export sales (GST-free exports)
    INPUT_TAXED = "input_taxed"  # G4 input taxed sales


class PurchaseTreatment(enum.StrEnum):
    TAXABLE = "taxable"  # GST in the price
    GST_FREE = "gst_free"  # no GST in the price -> G14
    INPUT_TAXED = "input_taxed"  # no GST in the price -> G14


class PurchaseUse(enum.StrEnum):
    BUSINESS = "business"
    INPUT_TAXED_SALES = "input_taxed_sales"  # G13 purchases for making input taxed sales
    PRIVATE = "private"  # G15 private use or not income tax deductible


@dataclass(frozen=True, slots=True)
class SaleLine:
    amount: Money
    treatment: SaleTreatment = SaleTreatment.TAXABLE


@dataclass(frozen=True, slots=True)
class PurchaseLine:
    amount: Money
    treatment: PurchaseTreatment = PurchaseTreatment.TAXABLE
    capital: bool = False  # G10 capital purchases, otherwise G11
    use: PurchaseUse = PurchaseUse.BUSINESS


@dataclass(frozen=True, slots=True)
class BasGstSummary:
    g1: int
    g2: int
    g3: int
    g4: int
    g5: int
    g6: int
    g7: int
    g8: int
    g9: int
    g10: int
    g11: int
    g12: int
    g13: int
    g14: int
    g15: int
    g16: int
    g17: int
    g18: int
    g19: int
    g20: int

    @property
    def label_1a(self) -> int:
        return self.g9

    @property
    def label_1b(self) -> int:
        return self.g20

    @property
    def net_gst(self) -> int:
        return self.g9 - self.g20


def _whole(amounts: Iterable[Decimal]) -> int:
    return int(drop_cents(sum(amounts, Decimal(0))))


def _adjustment(value: int, label: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"{label} must be whole dollars (int)", field=label)
    if value < 0:
        raise ValidationError(f"{label} must not be negative", field=label)
    return value


def bas_gst_summary(
    sales: Iterable[SaleLine],
    purchases: Iterable[PurchaseLine],
    *,
    g7: int = 0,
    g18: int = 0,
) -> BasGstSummary:
    sold = [(money(s.amount, field=f"sales[{i}]"), s.treatment) for i, s in enumerate(sales)]
    bought = [(money(p.amount, field=f"purchases[{i}]"), p) for i, p in enumerate(purchases)]

    g1 = _whole(a for a, _ in sold)
    g2 = _whole(a for a, t in sold if t is SaleTreatment.EXPORT)
    g3 = _whole(a for a, t in sold if t is SaleTreatment.GST_FREE)
    g4 = _whole(a for a, t in sold if t is SaleTreatment.INPUT_TAXED)
    g5 = g2 + g3 + g4
    g6 = g1 - g5
    g7 = _adjustment(g7, "g7")
    g8 = g6 + g7
    g9 = int(drop_cents(g8 / _ELEVEN))

    # Each purchase is excluded at most once: no GST in the price (G14) wins over its use.
    no_gst = [a for a, p in bought if p.treatment is not PurchaseTreatment.TAXABLE]
    with_gst = [(a, p) for a, p in bought if p.treatment is PurchaseTreatment.TAXABLE]
    g10 = _whole(a for a, p in bought if p.capital)
    g11 = _whole(a for a, p in bought if not p.capital)
    g12 = g10 + g11
    g13 = _whole(a for a, p in with_gst if p.use is PurchaseUse.INPUT_TAXED_SALES)
    g14 = _whole(no_gst)
    g15 = _whole(a for a, p in with_gst if p.use is PurchaseUse.PRIVATE)
    g16 = g13 + g14 + g15
    g17 = max(g12 - g16, 0)
    g18 = _adjustment(g18, "g18")
    g19 = g17 + g18
    g20 = int(drop_cents(g19 / _ELEVEN))

    return BasGstSummary(
        g1, g2, g3, g4, g5, g6, g7, g8, g9, g10,
        g11, g12, g13, g14, g15, g16, g17, g18, g19, g20,
    )  # fmt: skip
