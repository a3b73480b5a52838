"""The error a preference row fails validation with, shared by the row parser and its tool rules."""

from dataclasses import dataclass


@dataclass(frozen=True)
class RowError(Exception):
    """A row that cannot be used; `line` is 1-based, `field` a path like `chosen[0].content`."""

    line: int
    field: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", field '{self.field}'" if self.field else "")
        return f"{where}: {self.message}"
