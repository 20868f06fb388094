"""Recognising the operations the compiled path answers, and planning them.

An operation qualifies when it is the document's only definition, a query without
directives, whose root selects one field of ``SOURCES`` (plus any ``__typename``), and
whose selections below it are only fields (aliases allowed; no fragments, no directives):
below a connection, among ``edges { cursor node { ... } }``, ``nodes { ... }``,
``pageInfo { ... }`` and ``__typename``; below a list, its items' fields. The fields of a
node or item must be ones the source maps to SQL (or ``__typename``), and every field the
operation reads plain (no permission classes, field extensions or directives: nothing the
compiled path would skip). Anything else plans to ``None`` and is served by Strawberry.

The document is parsed and validated first exactly as the schema's extensions do it
(token limit; graphql-core's rules with the same depth and alias limits; Strawberry's
own rules), so a document the slow path rejects is never answered here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from json.encoder import encode_basestring_ascii as json_string
from typing import Any

from graphql import (
    FieldNode,
    GraphQLError,
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableDefinitionNode,
    get_argument_values,
    get_named_type,
    get_nullable_type,
    get_variable_values,
    is_list_type,
    parse,
    specified_rules,
)
from graphql.validation import ASTValidationRule
from sqlalchemy import Select, Text, func, literal
from sqlalchemy import cast as sql_cast
from strawberry.schema.schema import validate_document
from strawberry.schema.schema_converter import GraphQLCoreConverter

from zixly.core.settings import Settings
from zixly.graphql.compiled.render import (
    CURSOR,
    END_CURSOR,
    HAS_NEXT_PAGE,
    START_CURSOR,
    Const,
    Edges,
    Fields,
    Node,
    Nodes,
    Object,
    Value,
    key,
)
from zixly.graphql.compiled.sources import (
    SOURCES,
    Bound,
    ConnectionSource,
    ListSource,
    Source,
    SqlText,
    SqlValue,
)
from zixly.graphql.schema import limit_rules

TYPENAME = "__typename"
# json_build_object takes at most 100 arguments: 50 key/value pairs.
MAX_OBJECT_FIELDS = 50
DEFINITION_BACKREF = GraphQLCoreConverter.DEFINITION_BACKREF


class Unsupported(Exception):
    """The operation is valid but not one the compiled path answers."""


@dataclass(frozen=True)
class Plan:
    operation_name: str | None
    variable_definitions: tuple[VariableDefinitionNode, ...]
    source: Source
    field: GraphQLField
    field_node: FieldNode
    columns: tuple[SqlText, ...]  # per object selection: its JSON object, as text
    data: Fields  # the response's "data" object

    def select(self, bound: Bound) -> Select[Any]:
        """The statement to run instead of the repository's (with ``bound.params``)."""
        return self.source.select(bound, self.columns)

    def arguments(
        self, schema: GraphQLSchema, variables: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The listing's arguments coerced as graphql-core's executor coerces them (GraphQL
        names), or ``None`` when the variables do not coerce."""
        coerced = get_variable_values(schema, self.variable_definitions, variables or {})
        if isinstance(coerced, list):
            return None
        try:
            return get_argument_values(self.field, self.field_node, coerced)
        except GraphQLError:
            return None


class Planner:
    def __init__(
        self, schema: GraphQLSchema, settings: Settings, sources: Mapping[str, Source] = SOURCES
    ) -> None:
        self.schema = schema
        self.sources = sources
        self.max_tokens = settings.max_query_tokens
        # What the schema validates with: graphql-core's rules, then its depth and alias
        # limits (validate_document adds Strawberry's own).
        self.rules: tuple[type[ASTValidationRule], ...] = (
            *specified_rules,
            *limit_rules(settings),
        )
        # Bounded like the schema's parser and validation caches; it also remembers the
        # documents that plan to None, so those are parsed once here too.
        self.plan = lru_cache(maxsize=settings.parser_cache_size)(self._plan)

    def _plan(self, query: str) -> Plan | None:
        try:
            document = parse(query, max_tokens=self.max_tokens)
        except GraphQLError:
            return None
        if validate_document(self.schema, document, self.rules):
            return None
        if len(document.definitions) != 1:
            return None
        operation = document.definitions[0]
        if not isinstance(operation, OperationDefinitionNode):
            return None
        try:
            return self._recognise(operation)
        except Unsupported:
            return None

    def _recognise(self, operation: OperationDefinitionNode) -> Plan:
        query = self.schema.query_type
        if (
            operation.operation is not OperationType.QUERY
            or operation.directives
            or query is None
            or any(variable.directives for variable in operation.variable_definitions or ())
        ):
            raise Unsupported
        root = _collect([operation.selection_set])
        listings = [name for name, nodes in root.items() if nodes[0].name.value != TYPENAME]
        if len(listings) != 1:
            raise Unsupported
        field_nodes = root[listings[0]]
        source = self.sources.get(field_nodes[0].name.value)
        if source is None:
            raise Unsupported
        _check_plain(query, source.field, resolver=True)
        shape = _shape(query, source)
        data = tuple(
            (
                key(name),
                _typename(query) if nodes[0].name.value == TYPENAME else shape.value(nodes),
            )
            for name, nodes in root.items()
        )
        return Plan(
            operation_name=operation.name.value if operation.name else None,
            variable_definitions=tuple(operation.variable_definitions or ()),
            source=source,
            field=query.fields[source.field],
            field_node=field_nodes[0],
            columns=shape.objects.columns(),
            data=data,
        )


def _collect(selection_sets: Iterable[SelectionSetNode | None]) -> dict[str, list[FieldNode]]:
    """Fields by response key, in selection order, merging repeats of a key the way
    graphql-core does (validation made sure they are the same field and arguments)."""
    fields: dict[str, list[FieldNode]] = {}
    for selection_set in selection_sets:
        if selection_set is None:
            raise Unsupported
        for selection in selection_set.selections:
            if not isinstance(selection, FieldNode) or selection.directives:
                raise Unsupported
            name = selection.alias.value if selection.alias else selection.name.value
            fields.setdefault(name, []).append(selection)
    return fields


def _sub(nodes: list[FieldNode]) -> dict[str, list[FieldNode]]:
    return _collect(node.selection_set for node in nodes)


def _object_type(type_: GraphQLObjectType, field: str) -> GraphQLObjectType:
    """The object type of ``type_``'s field ``field`` (or of its items)."""
    found = get_named_type(type_.fields[field].type)
    if not isinstance(found, GraphQLObjectType):
        raise Unsupported
    return found


def _check_plain(type_: GraphQLObjectType, field: str, *, resolver: bool = False) -> None:
    """Strawberry runs nothing for the field but (when ``resolver``) its resolver: no
    permission classes, no field extensions, no schema directives. A field that gains one
    is no longer compiled, so the compiled path can never bypass it."""
    definition = (type_.fields[field].extensions or {}).get(DEFINITION_BACKREF)
    if (
        definition is None
        or definition.permission_classes
        or definition.extensions
        or definition.directives
        or (definition.base_resolver is not None and not resolver)
    ):
        raise Unsupported


class _Objects:
    """The object selections of a plan (a connection's nodes, a list's items), each one
    JSON column; equal selections share one."""

    def __init__(self, source: Source, type_: GraphQLObjectType) -> None:
        self.source = source
        self.type = type_
        self.selections: list[tuple[tuple[str, str], ...]] = []

    def columns(self) -> tuple[SqlText, ...]:
        return tuple(_object_json(self.source, self.type, s) for s in self.selections)

    def selection(self, nodes: list[FieldNode]) -> int:
        """The index of this selection's JSON column."""
        pairs: list[tuple[str, str]] = []
        for name, sub in _sub(nodes).items():
            field = sub[0].name.value
            if field != TYPENAME:
                if field not in self.source.fields:
                    raise Unsupported  # e.g. an object field such as Client.latestFinancial
                _check_plain(self.type, field)
            pairs.append((name, field))
        if len(pairs) > MAX_OBJECT_FIELDS:
            raise Unsupported
        selection = tuple(pairs)
        if selection not in self.selections:
            self.selections.append(selection)
        return self.selections.index(selection)


class _Shape(ABC):
    """The shape of the response below the source's field."""

    objects: _Objects

    @abstractmethod
    def value(self, nodes: list[FieldNode]) -> Value:
        """The field's value for its (merged) selections ``nodes``."""


def _shape(query: GraphQLObjectType, source: Source) -> _Shape:
    if isinstance(source, ConnectionSource):
        return _Connection(source, _object_type(query, source.field))
    if isinstance(source, ListSource):
        return _List(source, query)
    raise Unsupported


class _List(_Shape):
    def __init__(self, source: Source, query: GraphQLObjectType) -> None:
        if not is_list_type(get_nullable_type(query.fields[source.field].type)):
            raise Unsupported
        self.objects = _Objects(source, _object_type(query, source.field))

    def value(self, nodes: list[FieldNode]) -> Value:
        return Nodes(self.objects.selection(nodes))


class _Connection(_Shape):
    def __init__(self, source: Source, connection: GraphQLObjectType) -> None:
        self.connection_type = connection
        self.edge = _object_type(connection, "edges")
        self.page_info = _object_type(connection, "pageInfo")
        self.objects = _Objects(source, _object_type(self.edge, "node"))

    def value(self, nodes: list[FieldNode]) -> Value:
        return Object(self._connection(nodes))

    def _fields(
        self, type_: GraphQLObjectType, nodes: list[FieldNode]
    ) -> Iterator[tuple[str, str, list[FieldNode]]]:
        """(response key, field name, its nodes) of the merged selections, checked plain."""
        for name, sub in _sub(nodes).items():
            field = sub[0].name.value
            if field != TYPENAME:
                _check_plain(type_, field)
            yield key(name), field, sub

    def _connection(self, nodes: list[FieldNode]) -> Fields:
        items: list[tuple[str, Value]] = []
        for name, field, sub in self._fields(self.connection_type, nodes):
            value: Value
            if field == TYPENAME:
                value = _typename(self.connection_type)
            elif field == "edges":
                value = Edges(self._edge(sub))
            elif field == "nodes":
                value = Nodes(self.objects.selection(sub))
            elif field == "pageInfo":
                value = Object(self._page_info(sub))
            else:
                raise Unsupported
            items.append((name, value))
        return tuple(items)

    def _edge(self, nodes: list[FieldNode]) -> Fields:
        items: list[tuple[str, Value]] = []
        for name, field, sub in self._fields(self.edge, nodes):
            value: Value
            if field == TYPENAME:
                value = _typename(self.edge)
            elif field == "cursor":
                value = CURSOR
            elif field == "node":
                value = Node(self.objects.selection(sub))
            else:
                raise Unsupported
            items.append((name, value))
        return tuple(items)

    def _page_info(self, nodes: list[FieldNode]) -> Fields:
        items: list[tuple[str, Value]] = []
        for name, field, _sub_nodes in self._fields(self.page_info, nodes):
            value = _typename(self.page_info) if field == TYPENAME else _PAGE_INFO.get(field)
            if value is None:
                raise Unsupported
            items.append((name, value))
        return tuple(items)


_PAGE_INFO: dict[str, Value] = {
    "hasNextPage": HAS_NEXT_PAGE,
    "hasPreviousPage": Const("false"),  # forward pagination only, as build_connection
    "startCursor": START_CURSOR,
    "endCursor": END_CURSOR,
}


def _typename(type_: GraphQLObjectType) -> Const:
    return Const(json_string(type_.name))


def _object_json(
    source: Source, type_: GraphQLObjectType, selection: tuple[tuple[str, str], ...]
) -> SqlText:
    """``json_build_object`` keyed by the response keys (bound parameters), as text; json,
    not jsonb, so the keys keep the selection's order."""
    arguments: list[SqlValue] = []
    for name, field in selection:
        arguments += [_text(name), _text(type_.name) if field == TYPENAME else source.fields[field]]
    return sql_cast(func.json_build_object(*arguments), Text)


def _text(value: str) -> SqlText:
    """A bound text parameter; typed, as ``json_build_object`` cannot infer one."""
    return sql_cast(literal(value, Text), Text)
