"""Writes compiled once to the driver's own SQL and executed with plain tuples: the hot paths.

``AsyncConnection.execute(statement, rows)`` runs every row's parameters through the compiler (about
25 µs a row on the CI machine, twice what the write costs in SQLite); a dispatch round or a batch of
settlements writes hundreds of rows, so those statements are built with Core as usual, compiled once
per dialect, and the driver gets tuples. Only for columns whose types need no bind processing
(strings, integers, floats, JSON the caller serialised): nothing converts the values on the way.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.dml import UpdateBase


class Prepared:
    """One INSERT/UPDATE/DELETE whose parameters are named bind parameters, executed many rows at once.

    ``statement`` is the statement, or a function of the dialect's name building it (for dialect
    forms such as ``ON CONFLICT``).
    """

    def __init__(self, statement: UpdateBase | Callable[[str], UpdateBase]) -> None:
        self._build = statement if callable(statement) else lambda _dialect: statement
        self._compiled: dict[str, tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]] = {}

    @classmethod
    def insert(cls, table: Table, columns: Sequence[str]) -> Prepared:
        """``INSERT INTO table (columns…) VALUES (…)`` taking each row's values by column name."""
        return cls(insert(table).values({c: bindparam(c) for c in columns}))

    def compiled(self, dialect: Dialect) -> tuple[str, Callable[[Mapping[str, Any]], tuple[Any, ...]]]:
        """The driver SQL for ``dialect`` and what turns a row into its positional parameters."""
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self._build(dialect.name).compile(dialect=dialect)
            names = tuple(compiled.positiontup or ())
            if not names and compiled.binds:
                raise ValueError(f"{dialect.name} does not take positional parameters")
            found = (compiled.string, _positional(names))
            self._compiled[dialect.name] = found
        return found

    async def many(self, conn: AsyncConnection, rows: Sequence[Mapping[str, Any]]) -> int:
        """Run once per row in one driver call; the rows changed, where the driver can tell (else -1)."""
        if not rows:
            return 0
        sql, positional = self.compiled(conn.dialect)
        result = await conn.exec_driver_sql(sql, [positional(row) for row in rows])
        return int(result.rowcount)


def _positional(names: tuple[str, ...]) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A row's values in ``names`` order, picked in C (a generator per row costs a microsecond more)."""
    if len(names) > 1:
        return operator.itemgetter(*names)
    return lambda row: tuple(row[n] for n in names)
