"""Interfaces the engine needs from the outside world; ``connectors/`` implements them.

Declared here so that ``sync/`` and ``personas/`` never import a concrete connector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import sqlalchemy as sa


class SourceError(Exception):
    """The warehouse could not answer: unreachable, missing table, failing query.

    The message is written for the operator and never carries credentials.
    """


class Catalog(Protocol):
    """What a warehouse can say about the shape of a table or query, without reading rows."""

    def describe_table(self, table: str) -> Mapping[str, str]:
        """Column name -> kind (number, text, date, datetime, boolean, unknown); raises SourceError."""
        ...

    def describe_query(self, query: str) -> Mapping[str, str]:
        """Column name -> kind for the result of ``query``; raises SourceError."""
        ...

    def table_names(self, schema: str | None) -> list[str]:
        """Tables and views in ``schema`` (or the default schema), for did-you-mean hints."""
        ...

    def probe(self, statement: sa.Select[Any]) -> None:
        """Have the warehouse plan ``statement`` without returning rows; raises SourceError."""
        ...
