"""Australian business rules (identifiers, GST, BAS, PAYG withholding, super) as a
library the n8n community nodes and the API can share; see README.md."""

from zixly.n8n_nodes.bas import (
    BasGstSummary,
    PurchaseLine,
    PurchaseTreatment,
    PurchaseUse,
    SaleLine,
    SaleTreatment,
    bas_gst_summary,
)
from zixly.n8n_nodes.gst import Rounding, gst_from_exclusive, gst_from_inclusive, invoice_gst
from zixly.n8n_nodes.identifiers import (
    IdentifierResult,
    Reason,
    TfnSubstitute,
    tfn_substitute,
    validate_abn,
    validate_acn,
    validate_arbn,
    validate_arsn,
    validate_tfn,
)
from zixly.n8n_nodes.money import InvalidAmountError
from zixly.n8n_nodes.payg import Period, Scale, weekly_withholding, withholding
from zixly.n8n_nodes.super_guarantee import (
    PAYDAY_SUPER_START,
    SuperRuleUnavailableError,
    financial_year,
    max_contribution_base,
    quarterly_due_date,
    sg_rate,
)

__all__ = [
    "PAYDAY_SUPER_START",
    "BasGstSummary",
    "IdentifierResult",
    "InvalidAmountError",
    "Period",
    "PurchaseLine",
    "PurchaseTreatment",
    "PurchaseUse",
    "Reason",
    "Rounding",
    "SaleLine",
    "SaleTreatment",
    "Scale",
    "SuperRuleUnavailableError",
    "TfnSubstitute",
    "bas_gst_summary",
    "financial_year",
    "gst_from_exclusive",
    "gst_from_inclusive",
    "invoice_gst",
    "max_contribution_base",
    "quarterly_due_date",
    "sg_rate",
    "tfn_substitute",
    "validate_abn",
    "validate_acn",
    "validate_arbn",
    "validate_arsn",
    "validate_tfn",
    "weekly_withholding",
    "withholding",
]
