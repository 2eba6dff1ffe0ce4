"""JSON-lines writers for what a backtest produced (triggers, decisions, conversions).

Records are encoded with msgspec into one buffer and flushed in large
chunks: at a hundred thousand records a second, a write() per record would
cost more than the engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import msgspec

from nudgeflow.engine.actions import Action, Conversion, Decision, Trigger

_FLUSH_BYTES = 1 << 20


class _JsonLines:
    __slots__ = ("_buffer", "_encoder", "_file", "count")

    def __init__(self, path: Path) -> None:
        self._file: BinaryIO = open(path, "wb")  # noqa: SIM115 - closed by close()
        self._buffer = bytearray()
        self._encoder = msgspec.json.Encoder()
        self.count = 0

    def write(self, record: object) -> None:
        buffer = self._buffer
        self._encoder.encode_into(record, buffer, len(buffer))
        buffer += b"\n"
        self.count += 1
        if len(buffer) >= _FLUSH_BYTES:
            self._file.write(buffer)
            buffer.clear()

    def close(self) -> None:
        self._file.write(self._buffer)
        self._buffer.clear()
        self._file.close()


class ActionWriter:
    """Route each action to its file; a kind without a file is not written."""

    def __init__(
        self,
        triggers: Path | None = None,
        decisions: Path | None = None,
        conversions: Path | None = None,
    ) -> None:
        self.triggers = _JsonLines(triggers) if triggers else None
        self.decisions = _JsonLines(decisions) if decisions else None
        self.conversions = _JsonLines(conversions) if conversions else None

    def write(self, actions: Sequence[Action]) -> None:
        for action in actions:
            if isinstance(action, Trigger):
                if self.triggers is not None:
                    self.triggers.write(action)
            elif isinstance(action, Decision):
                if self.decisions is not None:
                    self.decisions.write(action)
            elif isinstance(action, Conversion) and self.conversions is not None:
                self.conversions.write(action)

    def close(self) -> None:
        for sink in (self.triggers, self.decisions, self.conversions):
            if sink is not None:
                sink.close()

    def __enter__(self) -> ActionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
