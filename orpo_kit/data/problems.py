"""Row-level problems of preference data: each has a kind, which the data policy maps to raise, drop or keep."""

from __future__ import annotations


class RowProblem(ValueError):
    """A row that cannot become a pair: `kind` selects the policy, the message names row and field."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
