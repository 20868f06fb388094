"""Relay-style connections with opaque cursors."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import strawberry

from zixly.core.errors import ValidationError
from zixly.domain.pages import Page, clamp_first
from zixly.graphql.context import Context

N = TypeVar("N")


@strawberry.type
class PageInfo:
    has_next_page: bool
    has_previous_page: bool
    start_cursor: str | None
    end_cursor: str | None


@strawberry.type
class Edge(Generic[N]):
    cursor: str
    node: N


@strawberry.type
class Connection(Generic[N]):
    edges: list[Edge[N]]
    nodes: list[N]
    page_info: PageInfo


def page_size(ctx: Context, first: int | None) -> int:
    maximum = ctx.settings.max_page_size
    return clamp_first(first, default=min(100, maximum), maximum=maximum)


def decode_after(
    ctx: Context, listing: str, after: str | None, arity: int
) -> tuple[str, ...] | None:
    """Decode an ``after`` cursor into its ``arity`` string keys (or reject it)."""
    if after is None:
        return None
    keys = ctx.services.cursors.decode(ctx.principal.tenant_id, listing, after)
    if len(keys) != arity or not all(isinstance(k, str) for k in keys):
        raise ValidationError("malformed or foreign cursor", field="after")
    try:
        uuid.UUID(keys[-1])
    except ValueError as exc:
        raise ValidationError("malformed or foreign cursor", field="after") from exc
    return tuple(keys)


def build_connection(
    ctx: Context,
    listing: str,
    page: Page[Any],
    to_node: Callable[[Any], N],
    keys: Callable[[Any], list[Any]],
) -> Connection[N]:
    codec = ctx.services.cursors
    tenant = ctx.principal.tenant_id
    nodes = [to_node(row) for row in page.items]
    edges = [
        Edge(cursor=codec.encode(tenant, listing, keys(row)), node=node)
        for row, node in zip(page.items, nodes, strict=True)
    ]
    return Connection(
        edges=edges,
        nodes=nodes,
        page_info=PageInfo(
            has_next_page=page.has_next,
            has_previous_page=False,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
    )
