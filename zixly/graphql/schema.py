"""The schema: every area's Query/Mutation/Subscription merged, with the protective extensions."""

from __future__ import annotations

import strawberry
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.tools import merge_types

from zixly.graphql.api.clients import ClientQuery
from zixly.graphql.api.me import MeQuery
from zixly.graphql.extensions import MaskUnexpectedErrors, OperationMetrics, RequestBoundary
from zixly.settings import Settings

Query = merge_types("Query", (MeQuery, ClientQuery))


def build_schema(settings: Settings) -> strawberry.Schema:
    cache_size = settings.parser_cache_size
    return strawberry.Schema(
        query=Query,
        extensions=[
            # Factories, not instances: strawberry builds fresh extensions per request.
            # The parser and validation caches are shared module-level LRUs per maxsize.
            OperationMetrics,
            MaskUnexpectedErrors,
            RequestBoundary,
            lambda: QueryDepthLimiter(max_depth=settings.max_query_depth),
            lambda: MaxTokensLimiter(max_token_count=settings.max_query_tokens),
            lambda: MaxAliasesLimiter(max_alias_count=settings.max_aliases),
            lambda: ParserCache(maxsize=cache_size),
            lambda: ValidationCache(maxsize=cache_size),
        ],
    )
