"""Why an event or a batch was refused: a stable reason code, the field, a message.

The reason is the `nudgeflow-reason` DLQ header and the `reason` metrics label; the
codes are listed in parse.py's docstring.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class EventError(ValueError):
    """One refused event: `reason` is a stable code, `field` a dotted path or None."""

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, str | None]:
        return {"reason": self.reason, "field": self.field, "message": self.message}

    def __repr__(self) -> str:
        return f"EventError({self.reason!r}, {self.message!r}, field={self.field!r})"


class BatchError(ValueError):
    """A batch refused as a whole; `errors` lists every bad item.

    `index` is the position in the array, or None when the body itself is bad
    (or was a single object rather than an array). `total` is how many events
    the body held, when known (for the events-received count).
    """

    def __init__(
        self, errors: Sequence[tuple[int | None, EventError]], total: int | None = None
    ) -> None:
        self.errors = list(errors)
        self.total = total
        super().__init__(f"{len(self.errors)} invalid event(s): " + self._summary())

    def _summary(self) -> str:
        return "; ".join(
            (f"[{i}] " if i is not None else "") + e.message for i, e in self.errors[:5]
        )

    @property
    def reasons(self) -> list[str]:
        return [e.reason for _, e in self.errors]

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": "invalid events; nothing was accepted",
            "errors": [{"index": i, **e.to_dict()} for i, e in self.errors],
        }
