"""The response of a compiled query, written as JSON text.

A plan's shape mirrors the operation's selections (response keys in selection order);
rendering fills it from the rows of one statement: each object (a connection's node, a
list's item) arrives as JSON text assembled by PostgreSQL, cursors are encoded here (only
those the selection asks for), and the rest of a connection is what
``relay.build_connection`` would return for the same page.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from json.encoder import encode_basestring_ascii as json_string


@dataclass(frozen=True)
class Const:
    """A value known when planning (``__typename``, ``hasPreviousPage``), as JSON."""

    json: str


@dataclass(frozen=True)
class Node:
    """One row's object, as PostgreSQL assembled it for the selection ``index``."""

    index: int


class Cursor:
    pass


class HasNextPage:
    pass


class StartCursor:
    pass


class EndCursor:
    pass


@dataclass(frozen=True)
class Edges:
    items: Fields


@dataclass(frozen=True)
class Nodes:
    """Every row's object for the selection ``index``, as a list."""

    index: int


@dataclass(frozen=True)
class Object:
    items: Fields


Value = Const | Node | Cursor | HasNextPage | StartCursor | EndCursor | Edges | Nodes | Object
# (JSON-encoded response key followed by ":", value)
Fields = tuple[tuple[str, Value], ...]

CURSOR, HAS_NEXT_PAGE, START_CURSOR, END_CURSOR = (
    Cursor(),
    HasNextPage(),
    StartCursor(),
    EndCursor(),
)


def key(response_key: str) -> str:
    return json_string(response_key) + ":"


class PageData:
    """The rows answered: each holds the JSON of every object selection, then (for a
    connection) the cursor keys; ``encode`` turns a row's keys into its cursor."""

    def __init__(
        self,
        rows: Sequence[Sequence[str]],
        has_next: bool = False,
        key_offset: int = 0,
        encode: Callable[[list[str]], str] | None = None,
    ) -> None:
        self.rows = rows
        self.has_next = has_next
        self._key_offset = key_offset
        self._encode = encode
        self._cursors: dict[int, str] = {}

    def cursor(self, index: int) -> str:
        """The row's cursor as a JSON string (encoded once however often it is asked for)."""
        found = self._cursors.get(index)
        if found is None:
            if self._encode is None:
                raise TypeError("these rows have no cursors")
            found = json_string(self._encode(list(self.rows[index][self._key_offset :])))
            self._cursors[index] = found
        return found

    def edge_cursor(self, index: int) -> str:
        return self.cursor(index) if self.rows else "null"


def render(fields: Fields, page: PageData) -> str:
    return "{" + ",".join(name + _value(value, page) for name, value in fields) + "}"


def _value(value: Value, page: PageData) -> str:
    if isinstance(value, Const):
        return value.json
    if isinstance(value, HasNextPage):
        return "true" if page.has_next else "false"
    if isinstance(value, StartCursor):
        return page.edge_cursor(0)
    if isinstance(value, EndCursor):
        return page.edge_cursor(len(page.rows) - 1)
    if isinstance(value, Nodes):
        return "[" + ",".join([row[value.index] for row in page.rows]) + "]"
    if isinstance(value, Edges):
        return _edges(value.items, page)
    if isinstance(value, Object):
        return render(value.items, page)
    raise TypeError(f"{value!r} belongs in an edge")


def _edges(items: Fields, page: PageData) -> str:
    """Column by column (one list per edge field), then joined row by row."""
    rows = page.rows
    columns: list[list[str]] = []
    for name, item in items:
        if isinstance(item, Node):
            columns.append([name + row[item.index] for row in rows])
        elif isinstance(item, Cursor):
            columns.append([name + page.cursor(i) for i in range(len(rows))])
        elif isinstance(item, Const):
            columns.append([name + item.json] * len(rows))
        else:
            raise TypeError(f"{item!r} does not belong in an edge")
    return "[" + ",".join(["{" + ",".join(edge) + "}" for edge in zip(*columns, strict=True)]) + "]"
