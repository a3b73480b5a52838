"""Cursor pages in creation order over tables with `created_at_us` and `id` (files, jobs)."""

import operator
from typing import Any, Protocol, TypeVar

from sqlmodel import col
from sqlmodel.sql.expression import SelectOfScalar


class Paged(Protocol):
    id: Any
    created_at_us: Any


R = TypeVar("R")


def newest_first(query: SelectOfScalar[R], table: type[Paged], anchor: Paged | None) -> SelectOfScalar[R]:
    """Order newest first and start after `anchor`, if any.

    By `created_at_us` (`alignd.models.unix_now_us`), not `created_at`: rows made within one second then
    still list in the order they were made. The id only breaks exact ties, which one process never makes.
    """
    return in_creation_order(query, table, anchor, newest_first=True)


def in_creation_order(
    query: SelectOfScalar[R], table: type[Paged], anchor: Paged | None, *, newest_first: bool
) -> SelectOfScalar[R]:
    """`newest_first`, or oldest first, as OpenAI's `order=asc` lists."""
    made, ident = col(table.created_at_us), col(table.id)
    if anchor is not None:
        beyond = operator.lt if newest_first else operator.gt
        query = query.where(
            beyond(made, anchor.created_at_us) | ((made == anchor.created_at_us) & beyond(ident, anchor.id))
        )
    if newest_first:
        return query.order_by(made.desc(), ident.desc())
    return query.order_by(made.asc(), ident.asc())
