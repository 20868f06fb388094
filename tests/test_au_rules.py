"""Australian business rules in zixly.n8n_nodes, checked against published vectors.

Sources named beside each vector; "doc" is docs/au-rules-and-provider-apis.md (shared),
which itself names the ATO/ABR/ASIC page each rule comes from. Expected values that are
not published are worked by hand in the comment next to them, from the sourced rule.
hypothesis is not installed, so the properties are exhaustive parametrised cases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest

from tests.au_rules_reference import evaluate, load_vectors
from zixly.core.errors import ValidationError
from zixly.n8n_nodes import (
    IdentifierResult,
    InvalidAmountError,
    Period,
    PurchaseLine,
    PurchaseTreatment,
    PurchaseUse,
    Reason,
    Rounding,
    SaleLine,
    SaleTreatment,
    Scale,
    SuperRuleUnavailableError,
    TfnSubstitute,
    bas_gst_summary,
    gst_from_exclusive,
    gst_from_inclusive,
    invoice_gst,
    max_contribution_base,
    quarterly_due_date,
    sg_rate,
    tfn_substitute,
    validate_abn,
    validate_acn,
    validate_arbn,
    validate_arsn,
    validate_tfn,
    weekly_withholding,
    withholding,
)

D = Decimal

# --- identifiers -------------------------------------------------------------------------

ABR_WORKED_EXAMPLE = "51 824 753 556"  # ABR "Format of the ABN" (weighted sum 534 = 89 x 6)
ASIC_ACN = "004 085 616"  # ASIC "Australian Company Number (ACN) Check Digit"
COMPANY_ABN = "53 004 085 616"  # doc: ABN of a company = 2 check digits + ACN 004 085 616
USUAL_TFN = "123 456 782"  # python-stdnum stdnum/au/tfn.py doctest

# python-stdnum tests/test_au_abn.doctest ("found online and should all be valid"), a
# selection including its irregular spacing.
STDNUM_ABNS = [
    "11574456001",
    "12 123 552 732",
    "14 007 145 637",
    "17 088 952 023 ",
    "211 082 588 59",
    "25 009 256 179",
    "30194533815",
    "35 061 659 185",
    "43 002 724 334",
    "46 0 0 2722 3 49",
    "50 001 065 096",
    "52 007 061 930",
    "57 064 001 270",
    "66 098 752 319",
    "75 091 431 202",
    "84 002 705 224",
    "88 775 098 848",
    "91 010 334 915",
    "92 104 128 001",
    "99870624871",
]


@pytest.mark.parametrize("abn", [ABR_WORKED_EXAMPLE, COMPANY_ABN, *STDNUM_ABNS])
def test_published_abns_are_valid(abn: str) -> None:
    result = validate_abn(abn)
    assert result.valid, result
    assert result.reason is None
    assert result.digits == abn.replace(" ", "")
    assert result.kind == "ABN"


def test_acn_and_its_siblings_use_the_asic_formula() -> None:
    for check, kind in ((validate_acn, "ACN"), (validate_arbn, "ARBN"), (validate_arsn, "ARSN")):
        result = check(ASIC_ACN)
        assert (result.valid, result.kind, result.digits) == (True, kind, "004085616")


def test_usual_tfn_is_valid() -> None:
    result = validate_tfn(USUAL_TFN)
    assert (result.valid, result.digits, result.substitute) == (True, "123456782", None)


def _single_digit_changes(number: str) -> list[str]:
    digits = number.replace(" ", "")
    return [
        digits[:i] + str(d) + digits[i + 1 :]
        for i in range(len(digits))
        for d in range(10)
        if str(d) != digits[i]
    ]


# Property: weights 10,1,3..19 are all < 89 (prime) and |change| <= 9, so no single-digit
# change keeps the sum mod 89 at 0 (ABR formula). Same for TFN weights 1..10 mod 11.
@pytest.mark.parametrize("changed", _single_digit_changes(ABR_WORKED_EXAMPLE))
def test_any_single_digit_change_breaks_an_abn(changed: str) -> None:
    assert validate_abn(changed).reason is Reason.CHECK_DIGIT


@pytest.mark.parametrize("changed", _single_digit_changes(USUAL_TFN))
def test_any_single_digit_change_breaks_a_tfn(changed: str) -> None:
    assert validate_tfn(changed).reason is Reason.CHECK_DIGIT


@pytest.mark.parametrize("last", [d for d in "012345789"])  # ASIC example ends in 6
def test_any_other_acn_check_digit_is_rejected(last: str) -> None:
    assert validate_acn("00408561" + last).reason is Reason.CHECK_DIGIT


@pytest.mark.parametrize(
    ("check", "value", "reason"),
    [
        (validate_abn, "51 824 753 55", Reason.WRONG_LENGTH),
        (validate_abn, "518247535560", Reason.WRONG_LENGTH),
        (validate_abn, "", Reason.WRONG_LENGTH),
        (validate_abn, "51-824-753-556", Reason.NON_DIGITS),
        (validate_abn, "51 824 753 55O", Reason.NON_DIGITS),
        (validate_abn, "\uff151824753556", Reason.NON_DIGITS),  # fullwidth digit is not ASCII
        (validate_abn, "51 824 753 557", Reason.CHECK_DIGIT),
        (validate_acn, "004 085 61", Reason.WRONG_LENGTH),
        (validate_acn, "004.085.616", Reason.NON_DIGITS),
        (validate_tfn, "123 456 78", Reason.WRONG_LENGTH),
        (validate_tfn, "123 456 78x", Reason.NON_DIGITS),
        (validate_tfn, "123 456 781", Reason.CHECK_DIGIT),
    ],
)
def test_invalid_identifiers_say_why(
    check: Callable[[str], IdentifierResult], value: str, reason: Reason
) -> None:
    result = check(value)
    assert (result.valid, result.reason) == (False, reason)


# doc (ATO payroll substitute codes): not TFNs, recognised separately.
@pytest.mark.parametrize(
    ("code", "meaning"),
    [
        ("000 000 000", TfnSubstitute.NOT_QUOTED),  # would pass mod 11; must still be refused
        ("111 111 111", TfnSubstitute.APPLIED_FOR),
        ("333 333 333", TfnSubstitute.UNDER_18),
        ("444 444 444", TfnSubstitute.PENSIONER),
        ("987 654 321", TfnSubstitute.QUOTED_WITH_LETTERS),
    ],
)
def test_tfn_substitute_codes_are_recognised_not_accepted(
    code: str, meaning: TfnSubstitute
) -> None:
    assert tfn_substitute(code) is meaning
    result = validate_tfn(code)
    assert (result.valid, result.reason, result.substitute) == (
        False,
        Reason.SUBSTITUTE_CODE,
        meaning,
    )


def test_a_real_tfn_is_not_a_substitute_code() -> None:
    assert tfn_substitute(USUAL_TFN) is None


# --- GST (doc: rate 10%, inclusive / 11, GST Act s9-90 half a cent rounds up) --------------


@pytest.mark.parametrize(
    ("amount", "gst"),
    [
        ("110", D("10.00")),  # 110 / 11
        ("100.00", D("9.09")),  # 9.0909..
        ("1.05", D("0.10")),  # 0.09545.. rounds up
        ("0.05", D("0.00")),  # 0.004545.. rounds down
        ("0", D("0.00")),
        (D("8496.73"), D("772.43")),  # 772.4300 exactly
    ],
)
def test_gst_from_inclusive(amount: str | Decimal, gst: Decimal) -> None:
    assert gst_from_inclusive(amount) == gst


@pytest.mark.parametrize(
    ("amount", "gst"),
    [
        ("100", D("10.00")),
        ("0.05", D("0.01")),  # exactly half a cent: up (round() would give 0.00)
        ("10.25", D("1.03")),  # 1.025: up (banker's rounding would give 1.02)
        ("0.04", D("0.00")),  # 0.004: down
        (3, D("0.30")),
    ],
)
def test_gst_from_exclusive_rounds_half_up(amount: str | int, gst: Decimal) -> None:
    assert gst_from_exclusive(amount) == gst


def test_invoice_rounding_method_is_a_parameter() -> None:
    # three GST-exclusive lines of $0.05: each line 0.005 -> 0.01, total 0.03;
    # invoice total 0.15 x 10% = 0.015 -> 0.02.
    lines = ["0.05", "0.05", "0.05"]
    assert invoice_gst(lines, prices_include_gst=False, rounding=Rounding.EACH_LINE) == D("0.03")
    assert invoice_gst(lines, prices_include_gst=False) == D("0.02")
    # two GST-inclusive lines of $1.05: each 0.09545 -> 0.10, total 0.20;
    # invoice total 2.10 / 11 = 0.1909 -> 0.19.
    inclusive = [D("1.05"), D("1.05")]
    assert invoice_gst(inclusive, prices_include_gst=True, rounding=Rounding.EACH_LINE) == D("0.20")
    assert invoice_gst(inclusive, prices_include_gst=True) == D("0.19")
    assert invoice_gst([], prices_include_gst=True) == D("0.00")


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        ("-0.01", "negative"),
        (-1, "negative"),
        ("NaN", "not_finite"),
        ("Infinity", "not_finite"),
        (D("-Infinity"), "not_finite"),
        ("1.001", "precision"),
        (D("0.005"), "precision"),
        ("ten", "not_a_number"),
        (1.1, "type"),
        (True, "type"),
    ],
)
def test_bad_amounts_are_typed_errors(amount: object, reason: str) -> None:
    with pytest.raises(InvalidAmountError) as raised:
        gst_from_inclusive(amount)  # type: ignore[arg-type]
    assert raised.value.reason == reason
    assert raised.value.extensions == {
        "code": "VALIDATION_ERROR",
        "field": "amount",
        "reason": reason,
    }


def test_bad_invoice_line_names_the_line() -> None:
    with pytest.raises(InvalidAmountError) as raised:
        invoice_gst(["1.00", "-2.00"], prices_include_gst=True)
    assert raised.value.field == "lines[1]"


def test_trailing_zeros_beyond_cents_are_accepted() -> None:
    assert gst_from_exclusive("10.2500") == D("1.03")


# --- BAS (NAT 5107 worksheet; whole dollars, cents dropped: TAA Sch1 s388-85) --------------

SALES = [
    SaleLine("11000.55"),
    SaleLine("2200.40", SaleTreatment.GST_FREE),
    SaleLine("3300.99", SaleTreatment.EXPORT),
    SaleLine("500.50", SaleTreatment.INPUT_TAXED),
]
PURCHASES = [
    PurchaseLine("5500.00", capital=True),
    PurchaseLine("3300.75"),
    PurchaseLine("1000.30", PurchaseTreatment.GST_FREE),
    PurchaseLine("220.00", use=PurchaseUse.PRIVATE),
    PurchaseLine("110.00", use=PurchaseUse.INPUT_TAXED_SALES),
]


def test_bas_worksheet() -> None:
    bas = bas_gst_summary(SALES, PURCHASES)
    # Sales: G1 = 17002.44 -> 17002; G2 3300; G3 2200; G4 500; G5 = 6000; G6 = 11002;
    # G8 = 11002; G9 = 11002 / 11 = 1000.18 -> 1000 (1A).
    assert (bas.g1, bas.g2, bas.g3, bas.g4) == (17002, 3300, 2200, 500)
    assert (bas.g5, bas.g6, bas.g7, bas.g8, bas.g9) == (6000, 11002, 0, 11002, 1000)
    # Purchases: G10 5500; G11 = 4631.05 -> 4631; G12 10131; G13 110; G14 1000; G15 220;
    # G16 1330; G17 8801; G19 8801; G20 = 8801 / 11 = 800.09 -> 800 (1B).
    assert (bas.g10, bas.g11, bas.g12) == (5500, 4631, 10131)
    assert (bas.g13, bas.g14, bas.g15, bas.g16) == (110, 1000, 220, 1330)
    assert (bas.g17, bas.g18, bas.g19, bas.g20) == (8801, 0, 8801, 800)
    assert (bas.label_1a, bas.label_1b, bas.net_gst) == (1000, 800, 200)


def test_bas_adjustments_feed_g8_and_g19() -> None:
    bas = bas_gst_summary(SALES, PURCHASES, g7=110, g18=11)
    # G8 = 11002 + 110 = 11112 -> G9 1010.18 -> 1010; G19 = 8801 + 11 = 8812 -> 801.09 -> 801
    assert (bas.g8, bas.g9, bas.g19, bas.g20, bas.net_gst) == (11112, 1010, 8812, 801, 209)


@pytest.mark.parametrize("adjustment", [{"g7": -1}, {"g18": -5}, {"g7": D("1.50")}])
def test_bas_adjustments_must_be_whole_non_negative_dollars(adjustment: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as raised:
        bas_gst_summary([], [], **adjustment)  # type: ignore[arg-type]
    assert raised.value.extensions["field"] == next(iter(adjustment))


def test_bas_drops_cents() -> None:
    # TAA 1953 Sch1 s388-85 (doc): $8,496.73 is reported as $8,496. G9 = 8496 / 11 = 772.36
    bas = bas_gst_summary([SaleLine("8496.73")], [])
    assert (bas.g1, bas.g9, bas.g20, bas.net_gst) == (8496, 772, 0, 772)


def test_bas_refund_is_a_negative_net_and_labels_stay_non_negative() -> None:
    bas = bas_gst_summary([SaleLine("110.00")], [PurchaseLine("1100.00", capital=True)])
    assert (bas.label_1a, bas.label_1b, bas.net_gst) == (10, 100, -90)
    # G10 0.50 + G11 0.50 drop to 0 + 0, while G14 = 1.00 -> 1: G17 clamps at 0.
    free = PurchaseTreatment.GST_FREE
    bas = bas_gst_summary(
        [], [PurchaseLine("0.50", free, capital=True), PurchaseLine("0.50", free)]
    )
    assert (bas.g12, bas.g14, bas.g17, bas.g20) == (0, 1, 0, 0)


def test_bas_rejects_a_negative_line() -> None:
    with pytest.raises(InvalidAmountError) as raised:
        bas_gst_summary([SaleLine("1.00"), SaleLine("-1.00")], [])
    assert raised.value.field == "sales[1]"


# --- PAYG withholding, Schedule 1, from 1 July 2024 (doc) ---------------------------------


@pytest.mark.parametrize(
    ("earnings", "withheld"),
    [
        ("1000", 143),  # doc worked example: 0.3227 x 1000.99 - 180.0385 = 142.98 -> 143
        ("1000.99", 143),  # cents ignored: x is still 1000.99
        ("0", 0),
        ("360", 0),  # x = 360.99 < 361: nil
        ("364", 1),  # 0.16 x 364.99 - 57.8462 = 0.5522 -> 1
        ("500", 22),  # 0.26 x 500.99 - 107.8462 = 22.41 -> 22
        ("1281", 234),  # 0.3227 x 1281.99 - 180.0385 = 233.66 -> 234
        ("4000", 1230),  # 0.47 x 4000.99 - 650.6154 = 1229.85 -> 1230
    ],
)
def test_weekly_scale_2(earnings: str, withheld: int) -> None:
    assert weekly_withholding(earnings) == withheld
    assert withholding(earnings, Period.WEEKLY, Scale.TAX_FREE_THRESHOLD) == withheld


@pytest.mark.parametrize(
    ("earnings", "period", "withheld"),
    [
        ("2000", Period.FORTNIGHTLY, 286),  # 1000/wk -> 143 x 2
        ("2001.98", Period.FORTNIGHTLY, 286),  # halve = 1000.99, drop cents -> 1000
        ("13000", Period.QUARTERLY, 1859),  # /13 = 1000 -> 143 x 13
        ("4333.33", Period.MONTHLY, 620),  # +1c, x3/13 = 1000.0015 -> 1000 -> 143 x 13/3 = 619.67
        # +1c matters: 1577.34 x 3/13 = 364.0015 -> 364 -> $1 -> 13/3 = 4.33 -> 4; without it
        # 1577.33 x 3/13 = 363.999 -> 363 -> 0.16 x 363.99 - 57.8462 = 0.39 -> $0.
        ("1577.33", Period.MONTHLY, 4),
        ("1577.32", Period.MONTHLY, 0),  # no +1c: 363.99 -> 363 -> 0
    ],
)
def test_other_periods_convert_as_the_ato_says(
    earnings: str, period: Period, withheld: int
) -> None:
    assert withholding(earnings, period) == withheld


# --- PAYG scale 1 (tax-free threshold not claimed), coefficients from the ATO page of
# 16 June 2024 (see payg.py). Worked by hand from those coefficients; the published sample
# data for both scales are in the shared vectors below.


@pytest.mark.parametrize(
    ("earnings", "period", "withheld"),
    [
        ("0", Period.WEEKLY, 0),  # 0.16 x 0.99 - 0.16 = -0.0016: nothing (not "-0")
        ("1000", Period.WEEKLY, 255),  # 0.3227 x 1000.99 - 68.2367 = 254.78 -> 255
        ("400", Period.WEEKLY, 76),  # 0.1890 x 400.99 + 0.6702 = 76.46 -> 76 (b is negative)
        ("2000", Period.FORTNIGHTLY, 510),  # 1000/wk -> 255 x 2
        ("4333.33", Period.MONTHLY, 1105),  # +1c -> 1000/wk -> 255 x 13/3 = 1105
        ("13000", Period.QUARTERLY, 3315),  # 1000/wk -> 255 x 13
        ("5000", Period.WEEKLY, 1863),  # 0.47 x 5000.99 - 487.2587 = 1863.20 -> 1863
    ],
)
def test_scale_1(earnings: str, period: Period, withheld: int) -> None:
    assert withholding(earnings, period, Scale.NO_TAX_FREE_THRESHOLD) == withheld


def test_scale_1_withholds_more_than_scale_2() -> None:
    for dollars in range(0, 4000, 7):
        scale_1 = weekly_withholding(str(dollars), Scale.NO_TAX_FREE_THRESHOLD)
        assert scale_1 >= weekly_withholding(str(dollars), Scale.TAX_FREE_THRESHOLD)


@pytest.mark.parametrize(("period", "scale"), [("yearly", 2), (Period.WEEKLY, 3)])
def test_unknown_period_or_scale_is_a_typed_error(period: object, scale: object) -> None:
    with pytest.raises(ValidationError) as raised:
        withholding("1000", period, scale)  # type: ignore[arg-type]
    assert raised.value.extensions["field"] in {"period", "scale"}


def test_withholding_rejects_bad_earnings() -> None:
    with pytest.raises(InvalidAmountError) as raised:
        withholding("-5", Period.FORTNIGHTLY)
    assert raised.value.field == "earnings"


# --- Super guarantee (doc: ATO "Key super rates"; rate follows the payment date) ----------


@pytest.mark.parametrize(
    ("paid", "rate"),
    [
        (dt.date(2022, 7, 1), D("0.105")),
        (dt.date(2023, 6, 30), D("0.105")),
        (dt.date(2023, 7, 1), D("0.11")),
        (dt.date(2024, 6, 30), D("0.11")),
        (dt.date(2024, 7, 1), D("0.115")),
        (dt.date(2025, 6, 30), D("0.115")),  # work in June, paid 30 June: 11.5%
        (dt.date(2025, 7, 1), D("0.12")),  # same work, paid 1 July: 12%
        (dt.date(2031, 1, 1), D("0.12")),  # 2025-26 and later
    ],
)
def test_sg_rate_by_payment_date(paid: dt.date, rate: Decimal) -> None:
    assert sg_rate(paid) == rate


def test_sg_rate_before_sourced_years_is_refused() -> None:
    with pytest.raises(SuperRuleUnavailableError):
        sg_rate(dt.date(2022, 6, 30))


@pytest.mark.parametrize(
    ("day", "base"),
    [
        (dt.date(2023, 7, 1), D(62270)),
        (dt.date(2024, 6, 30), D(62270)),
        (dt.date(2024, 7, 1), D(65070)),
        (dt.date(2025, 6, 30), D(65070)),
        (dt.date(2025, 7, 1), D(62500)),
        (dt.date(2026, 6, 30), D(62500)),
    ],
)
def test_max_contribution_base_per_quarter(day: dt.date, base: Decimal) -> None:
    assert max_contribution_base(day) == base


@pytest.mark.parametrize("day", [dt.date(2023, 6, 30), dt.date(2026, 7, 1)])
def test_max_contribution_base_outside_sourced_years_is_refused(day: dt.date) -> None:
    with pytest.raises(SuperRuleUnavailableError):
        max_contribution_base(day)


@pytest.mark.parametrize(
    ("day", "due"),
    [
        (dt.date(2025, 7, 1), dt.date(2025, 10, 28)),  # Jul-Sep -> 28 Oct
        (dt.date(2025, 9, 30), dt.date(2025, 10, 28)),
        (dt.date(2025, 10, 1), dt.date(2026, 1, 28)),  # Oct-Dec -> 28 Jan next year
        (dt.date(2025, 12, 31), dt.date(2026, 1, 28)),
        (dt.date(2026, 1, 1), dt.date(2026, 4, 28)),  # Jan-Mar -> 28 Apr
        (dt.date(2026, 3, 31), dt.date(2026, 4, 28)),
        (dt.date(2026, 4, 1), dt.date(2026, 7, 28)),  # Apr-Jun -> 28 Jul
        (dt.date(2026, 6, 30), dt.date(2026, 7, 28)),
    ],
)
def test_quarterly_due_dates(day: dt.date, due: dt.date) -> None:
    assert quarterly_due_date(day) == due


def test_no_quarterly_due_date_under_payday_super() -> None:
    with pytest.raises(SuperRuleUnavailableError) as raised:
        quarterly_due_date(dt.date(2026, 7, 1))
    assert raised.value.extensions["code"] == "VALIDATION_ERROR"


# --- the shared published vectors (tests/au_rules_vectors.json; the n8n node test uses the
# same file): the Python library must give every published value, and refuse every invalid
# input with the same field (and reason) the node reports.

_VECTORS = load_vectors()


@pytest.mark.parametrize("vector", _VECTORS["vectors"], ids=lambda v: v["id"])
def test_published_vector(vector: dict[str, Any]) -> None:
    assert vector["source"] in _VECTORS["sources"]
    answer = evaluate(vector["op"], vector["input"])
    assert {key: answer[key] for key in vector["expected"]} == vector["expected"]


@pytest.mark.parametrize("vector", _VECTORS["invalid"], ids=lambda v: v["id"])
def test_invalid_vector_is_refused(vector: dict[str, Any]) -> None:
    with pytest.raises(ValidationError) as raised:
        evaluate(vector["op"], vector["input"])
    assert raised.value.extensions["field"] == vector["error"]["field"]
    if "reason" in vector["error"]:
        assert raised.value.extensions["reason"] == vector["error"]["reason"]


def test_every_vector_source_is_used() -> None:
    used = {v["source"] for v in _VECTORS["vectors"]}
    assert used == set(_VECTORS["sources"])
