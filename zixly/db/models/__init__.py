"""Tables, as SQLAlchemy 2 models, by what they hold; importing this package registers them all
on ``Base.metadata``.

The migrations in ``zixly/migrations`` are the source of truth for DDL (they also hold the
row-level-security policies); ``tests/test_migrations.py`` fails when these models drift from
what the migrations create.
"""

from zixly.db.models.alerts import (
    ALERT_CHANNELS,
    ALERT_SEVERITIES,
    Alert,
    AlertDelivery,
    AlertSettings,
)
from zixly.db.models.base import Base
from zixly.db.models.instances import (
    ACTUAL_STATES,
    DESIRED_STATES,
    IngestToken,
    InstanceEvent,
    N8nInstance,
    WorkflowExport,
)
from zixly.db.models.tenants import (
    EMBEDDING_DIMENSIONS,
    INTEGRATION_STATUSES,
    ROLES,
    TENANT_SCOPED_TABLES,
    AuditLog,
    ClientKpi,
    CustomMetric,
    Financial,
    Integration,
    Invitation,
    LeadEvent,
    Membership,
    Tenant,
    User,
)

__all__ = [
    "ACTUAL_STATES",
    "ALERT_CHANNELS",
    "ALERT_SEVERITIES",
    "DESIRED_STATES",
    "EMBEDDING_DIMENSIONS",
    "INTEGRATION_STATUSES",
    "ROLES",
    "TENANT_SCOPED_TABLES",
    "Alert",
    "AlertDelivery",
    "AlertSettings",
    "AuditLog",
    "Base",
    "ClientKpi",
    "CustomMetric",
    "Financial",
    "IngestToken",
    "InstanceEvent",
    "Integration",
    "Invitation",
    "LeadEvent",
    "Membership",
    "N8nInstance",
    "Tenant",
    "User",
    "WorkflowExport",
]
