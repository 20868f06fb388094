"""``AnyRow``: the type of a result row of any width, read by column name.

SQLAlchemy 2.1 types ``Row`` by its columns (``Row[uuid.UUID, str]``), so ``Row[Any]`` means
a row of exactly one column and a ``select`` of six columns does not fit it. Repositories
hand back rows of many columns that callers read by attribute, so they are typed with this.
"""

from __future__ import annotations

from typing import Any, TypeAlias

from sqlalchemy import Row

AnyRow: TypeAlias = Row[*tuple[Any, ...]]
