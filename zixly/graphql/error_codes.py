"""``extensions.code`` for every GraphQL error, including graphql-core's own.

Errors Zixly raises carry their code already (``zixly.core.errors``). graphql-core's get one by
the phase that produced them:

- ``GRAPHQL_PARSE_FAILED``: the document is not GraphQL (syntax, the token limit);
- ``GRAPHQL_VALIDATION_FAILED``: it does not fit the schema (unknown field, argument of the
  wrong type, depth and alias limits);
- ``BAD_USER_INPUT``: a variable does not coerce to its declared type;
- ``INTERNAL``: anything else (an error during execution that Zixly did not raise).

Input errors (``BAD_USER_INPUT``, ``VALIDATION_ERROR``) found while coercing get a ``field``
when the error does not name one: the innermost argument or input field, as the resolvers'
own errors name it (``start`` of a date range, whether written inline or as ``$r``).
"""

from __future__ import annotations

import re
from typing import Any

from graphql import (
    ArgumentNode,
    DocumentNode,
    GraphQLError,
    GraphQLSyntaxError,
    Node,
    ObjectFieldNode,
    VariableNode,
    Visitor,
    visit,
)
from graphql.language.visitor import BREAK

PARSE, VALIDATE, EXECUTE = "parse", "validate", "execute"
INPUT_CODES = frozenset({"BAD_USER_INPUT", "VALIDATION_ERROR"})
# graphql-core: "Variable '$r' has invalid value at .start: ..." (print_path_list)
_VARIABLE = re.compile(r"^Variable '\$(\w+)' has invalid (?:default )?value(?: at ([^:\s]+))?:")


def with_code(error: GraphQLError, phase: str, document: DocumentNode | None) -> GraphQLError:
    extensions: dict[str, Any] = dict(error.extensions or {})
    code = extensions.get("code")
    if code is None:
        if isinstance(error, GraphQLSyntaxError) or phase == PARSE:
            code = "GRAPHQL_PARSE_FAILED"
        elif phase == VALIDATE:
            code = "GRAPHQL_VALIDATION_FAILED"
        elif error.path is None:
            code = "BAD_USER_INPUT"
        else:
            code = "INTERNAL"
        extensions["code"] = code
    if code in INPUT_CODES and "field" not in extensions:
        field = _field(error, document)
        if field:
            extensions["field"] = field
    error.extensions = extensions
    return error


def _field(error: GraphQLError, document: DocumentNode | None) -> str | None:
    """The innermost argument or input field the error is about, as the resolvers' own
    errors name it (``start`` of ``range``, ``value`` of ``input``)."""
    variable = _VARIABLE.match(error.message)
    if variable is not None:
        names = [part for part in re.split(r"[.\[\]]", variable[2] or "") if part]
        names = [part for part in names if not part.isdigit()]
        if names:
            return names[-1]
        return _argument_of(document, variable[1]) or variable[1]
    if document is None or not error.nodes:
        return None
    finder = _Enclosing(error.nodes[0])
    visit(document, finder)
    return finder.found


def _argument_of(document: DocumentNode | None, variable: str) -> str | None:
    """The argument (or input field) a variable is passed to."""
    if document is None:
        return None
    finder = _Enclosing(None, variable=variable)
    visit(document, finder)
    return finder.found


class _Enclosing(Visitor):
    """The name of the innermost argument or input field around ``target`` (or around the
    first use of ``variable``)."""

    def __init__(self, target: Node | None, variable: str | None = None) -> None:
        super().__init__()
        self.target = target
        self.variable = variable
        self.found: str | None = None

    def enter(self, node: Node, _key: Any, parent: Any, _path: Any, ancestors: Any) -> Any:
        if self.variable is not None:
            if not (isinstance(node, VariableNode) and node.name.value == self.variable):
                return None
            if not isinstance(parent, ArgumentNode | ObjectFieldNode | list):
                return None  # the variable's own definition
        elif node is not self.target:
            return None
        around = [*ancestors, parent]  # graphql-core's ancestors exclude the parent
        names = [a.name.value for a in around if isinstance(a, ArgumentNode | ObjectFieldNode)]
        if not names:
            return None
        self.found = names[-1]
        return BREAK
