"""Checks on a GraphQL request's input that apply to every field: text PostgreSQL can store,
and an operation that can be determined.

Every string an operation passes in its arguments (literals and the variables they use,
inside input objects, lists and JSON values alike) must be storable: no NUL character (a
PostgreSQL text value cannot hold it) and no lone surrogate (a JSON ``\\ud800`` escape can
carry one; UTF-8 cannot encode it). A refusal is ``VALIDATION_ERROR`` with the argument or
input field as ``field``, before anything executes. A document with several operations
needs ``operationName`` (``BAD_REQUEST``), as the GraphQL specification's GetOperation()
requires.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    ExecutionResult,
    GraphQLError,
    ListValueNode,
    ObjectValueNode,
    OperationDefinitionNode,
    StringValueNode,
    ValueNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql.validation import ASTValidationRule, ValidationContext
from strawberry.extensions import SchemaExtension

from zixly.core.bounds import storable
from zixly.core.errors import ValidationError


def unstorable_in(value: Any, name: str) -> str | None:
    """The name of the innermost field (of ``value`` named ``name``) holding a string
    PostgreSQL cannot store, or ``None``. JSON-like values; iterative (any depth)."""
    pending: list[tuple[Any, str]] = [(value, name)]
    while pending:
        item, field = pending.pop()
        if isinstance(item, str):
            if not storable(item):
                return field
        elif isinstance(item, Mapping):
            for key, inner in item.items():
                if isinstance(key, str) and not storable(key):
                    return field
                pending.append((inner, str(key)))
        elif isinstance(item, list | tuple):
            pending.extend((inner, field) for inner in item)
    return None


class _Arguments(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.found: list[ArgumentNode] = []

    def enter_argument(self, node: ArgumentNode, *_: Any) -> None:
        self.found.append(node)


def _literals(argument: ArgumentNode) -> Iterator[tuple[ValueNode, str]]:
    pending: list[tuple[ValueNode, str]] = [(argument.value, argument.name.value)]
    while pending:
        node, field = pending.pop()
        yield node, field
        if isinstance(node, ListValueNode):
            pending.extend((inner, field) for inner in node.values)
        elif isinstance(node, ObjectValueNode):
            pending.extend((inner.value, inner.name.value) for inner in node.fields)


def unstorable_argument(document: DocumentNode, variables: Mapping[str, Any] | None) -> str | None:
    """The argument (or input field) of ``document`` whose value, written in the document or
    passed as a variable, holds a string PostgreSQL cannot store."""
    arguments = _Arguments()
    visit(document, arguments)
    for argument in arguments.found:
        for node, field in _literals(argument):
            if isinstance(node, StringValueNode) and not storable(node.value):
                return field
            if isinstance(node, VariableNode) and variables:
                found = unstorable_in(variables.get(node.name.value), field)
                if found is not None:
                    return found
    return None


def guarded(rule: type[ASTValidationRule]) -> type[ASTValidationRule]:
    """``rule`` reporting a validation error where it would raise: Strawberry's depth limit
    computes ``max()`` over a selection set that graphql-core lets be empty (``{}``) and
    recurses once per level, and a rule that raises escapes the operation's error handling.
    """

    class Guarded(rule):  # type: ignore[valid-type,misc]
        def __init__(self, context: ValidationContext) -> None:
            try:
                super().__init__(context)
            except (ValueError, RecursionError) as exc:
                ASTValidationRule.__init__(self, context)
                reason = (
                    "the document is nested too deeply"
                    if isinstance(exc, RecursionError)
                    else "a selection set is empty"
                )
                context.report_error(
                    GraphQLError(reason, extensions={"code": "GRAPHQL_VALIDATION_FAILED"})
                )

    Guarded.__name__ = Guarded.__qualname__ = f"Guarded{rule.__name__}"
    return Guarded


def several_operations(document: DocumentNode) -> bool:
    return sum(isinstance(d, OperationDefinitionNode) for d in document.definitions) > 1


class InputChecks(SchemaExtension):
    """Refuses unstorable text and undetermined operations before execution (HTTP and
    WebSocket alike)."""

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        # operation_name falls back to the first operation's name: what the client sent counts
        provided = getattr(context, "_provided_operation_name", None)
        if document is not None and provided is None and several_operations(document):
            context.pre_execution_errors = [
                *(context.pre_execution_errors or ()),
                GraphQLError(
                    "the document has several operations: name the one to run in operationName",
                    extensions={"code": "BAD_REQUEST"},
                ),
            ]
        yield

    def on_execute(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        field = None if document is None else unstorable_argument(document, context.variables)
        if field is not None:
            error = ValidationError(
                f"{field} must not contain NUL characters or unpaired surrogates", field=field
            )
            # A result set here is the operation's result: nothing executes.
            context.result = ExecutionResult(
                data=None, errors=[GraphQLError(error.message, original_error=error)]
            )
        yield
