"""Newest-first cursor pages over tables with `created_at` and `id` (files, jobs)."""

from typing import Any, Protocol, TypeVar

from sqlmodel import col
from sqlmodel.sql.expression import SelectOfScalar


class Paged(Protocol):
    id: Any
    created_at: Any


R = TypeVar("R")


def newest_first(query: SelectOfScalar[R], table: type[Paged], anchor: Paged | None) -> SelectOfScalar[R]:
    """Order newest first (id breaks ties within a second) and start after `anchor`, if any."""
    if anchor is not None:
        query = query.where(
            (col(table.created_at) < anchor.created_at)
            | ((col(table.created_at) == anchor.created_at) & (col(table.id) < anchor.id))
        )
    return query.order_by(col(table.created_at).desc(), col(table.id).desc())
