"""Newest-first cursor pages over tables with `created_at_us` and `id` (files, jobs)."""

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
    if anchor is not None:
        query = query.where(
            (col(table.created_at_us) < anchor.created_at_us)
            | ((col(table.created_at_us) == anchor.created_at_us) & (col(table.id) < anchor.id))
        )
    return query.order_by(col(table.created_at_us).desc(), col(table.id).desc())
