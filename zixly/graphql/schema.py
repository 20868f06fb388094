"""The schema: every area's Query/Mutation/Subscription merged, with the protective extensions."""

from __future__ import annotations

from pathlib import Path

import strawberry
from graphql.validation import ASTValidationRule
from strawberry.extensions import (
    AddValidationRules,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.tools import merge_types

from zixly.core.settings import Settings
from zixly.graphql.api.alerts import AlertMutation, AlertQuery
from zixly.graphql.api.analytics import AnalyticsQuery
from zixly.graphql.api.client_mutations import ClientMutation
from zixly.graphql.api.clients import ClientQuery
from zixly.graphql.api.ingest_tokens import IngestTokenMutation, IngestTokenQuery
from zixly.graphql.api.instances import InstanceMutation, InstanceQuery, InstanceSubscription
from zixly.graphql.api.integration_connect import IntegrationConnectMutation
from zixly.graphql.api.integrations import IntegrationQuery
from zixly.graphql.api.invitations import InvitationMutation, InvitationQuery
from zixly.graphql.api.me import MeQuery
from zixly.graphql.api.members import MemberMutation, MemberQuery
from zixly.graphql.api.metrics import MetricsMutation, MetricsQuery
from zixly.graphql.api.subscriptions import Subscription
from zixly.graphql.api.tenants import TenantMutation, TenantQuery
from zixly.graphql.disclosure import disclosure_extensions
from zixly.graphql.extensions import (
    CachedParse,
    MaskUnexpectedErrors,
    OperationMetrics,
    RequestBoundary,
    RetryAfterStatus,
)
from zixly.graphql.input_checks import InputChecks, guarded
from zixly.graphql.scalars import SCALAR_OVERRIDES

Query = merge_types(
    "Query",
    (
        MeQuery,
        ClientQuery,
        MemberQuery,
        InvitationQuery,
        TenantQuery,
        AnalyticsQuery,
        MetricsQuery,
        IntegrationQuery,
        InstanceQuery,
        IngestTokenQuery,
        AlertQuery,
    ),
)
Mutation = merge_types(
    "Mutation",
    (
        ClientMutation,
        MemberMutation,
        InvitationMutation,
        TenantMutation,
        MetricsMutation,
        InstanceMutation,
        IngestTokenMutation,
        IntegrationConnectMutation,
        AlertMutation,
    ),
)
Subscriptions = merge_types("Subscription", (Subscription, InstanceSubscription))


SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schema.graphql"


def render_sdl() -> str:
    """The SDL committed as schema.graphql (limits do not change the schema's shape)."""
    return build_schema(Settings()).as_str() + "\n"


def limit_rules(settings: Settings) -> list[type[ASTValidationRule]]:
    """The depth and alias limits as validation rules, created once per schema.

    Each ``QueryDepthLimiter``/``MaxAliasesLimiter`` instance creates a new rule class, and
    the validation cache keys on the rule classes: built per request they never hit it.
    """
    return [
        guarded(rule)
        for rule in (
            *QueryDepthLimiter(max_depth=settings.max_query_depth).validation_rules,
            *MaxAliasesLimiter(max_alias_count=settings.max_aliases).validation_rules,
        )
    ]


def build_schema(settings: Settings) -> strawberry.Schema:
    cache_size = settings.parser_cache_size
    rules = limit_rules(settings)
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscriptions,
        scalar_overrides=SCALAR_OVERRIDES,
        extensions=[
            # Factories, not instances: strawberry builds fresh extensions per request.
            # The parser and validation caches are shared module-level LRUs per maxsize.
            OperationMetrics,
            MaskUnexpectedErrors,
            RetryAfterStatus,  # inside the masking: sees the errors as raised
            RequestBoundary,
            lambda: AddValidationRules(rules),
            lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
            lambda: CachedParse(maxsize=cache_size),
            lambda: ValidationCache(maxsize=cache_size),
            *disclosure_extensions(settings),
            InputChecks,  # after ValidationCache, which replaces the validation errors
        ],
    )
