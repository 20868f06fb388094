"""``extensions.code`` for every GraphQL error, including graphql-core's own.

Errors Zixly raises carry their code already (``zixly.errors``). graphql-core's get one by
the phase that produced them:

- ``GRAPHQL_PARSE_FAILED``: the document is not GraphQL (syntax, the token limit);
- ``GRAPHQL_VALIDATION_FAILED``: it does not fit the schema (unknown field, argument of the
  wrong type, depth and alias limits);
- ``BAD_USER_INPUT``: a variable does not coerce to its declared type;
- ``INTERNAL``: anything else (an error during execution that Zixly did not raise).

Input errors (``BAD_USER_INPUT``, ``VALIDATION_ERROR``) found while coercing get a ``field``
when the error does not name one: the variable and its path (``r.start``), or the argument
and input fields a literal sits in.
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
    variable = _VARIABLE.match(error.message)
    if variable is not None:
        return variable[1] + (variable[2] or "").replace("[", ".").replace("]", "")
    if document is None or not error.nodes:
        return None
    finder = _Enclosing(error.nodes[0])
    visit(document, finder)
    return finder.found


class _Enclosing(Visitor):
    """The names of the arguments and input fields around ``target``, outermost first."""

    def __init__(self, target: Node) -> None:
        super().__init__()
        self.target = target
        self.found: str | None = None

    def enter(self, node: Node, _key: Any, parent: Any, _path: Any, ancestors: Any) -> Any:
        if node is not self.target:
            return None
        around = [*ancestors, parent]  # graphql-core's ancestors exclude the parent
        names = [a.name.value for a in around if isinstance(a, ArgumentNode | ObjectFieldNode)]
        self.found = ".".join(names) or None
        return BREAK
