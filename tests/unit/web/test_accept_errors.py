"""`socket.accept() out of system resource` is counted every time, logged once a period."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from nudgeflow.observability import metrics
from nudgeflow.web.accept_errors import MESSAGE, AcceptErrorLog


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    """Records straight from the module's logger (other tests may stop propagation)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_storm_is_one_line_per_period_with_the_count() -> None:
    clock = Clock()
    handler = AcceptErrorLog(every_s=10.0, clock=clock)
    loop = asyncio.new_event_loop()
    before = metrics.http_accept_errors._value.get()
    context = {"message": MESSAGE, "exception": OSError(24, "Too many open files")}
    caught = Lines()
    logger = logging.getLogger("nudgeflow.web.accept_errors")
    saved = logger.disabled, logger.level  # another test's logging setup may have set them
    logger.disabled, logger.level = False, logging.WARNING
    logger.addHandler(caught)
    try:
        for _ in range(5000):
            handler(loop, context)
        clock.now += 10.0
        for _ in range(3):
            handler(loop, context)
    finally:
        loop.close()
        logger.removeHandler(caught)
        logger.disabled, logger.level = saved
    lines = [r.getMessage() for r in caught.records]
    assert len(lines) == 2, lines
    assert "1 time(s)" in lines[0] and "5000 time(s)" in lines[1]  # counted, not lost
    assert "Too many open files" in lines[0] and all(r.exc_info is None for r in caught.records)
    assert metrics.http_accept_errors._value.get() - before == 5003


def test_other_exceptions_go_to_the_handler_that_was_there() -> None:
    seen: list[dict[str, Any]] = []
    loop = asyncio.new_event_loop()
    try:
        loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
        log = AcceptErrorLog()
        log.install(loop)
        loop.call_exception_handler({"message": "something else"})
        loop.call_exception_handler({"message": MESSAGE})
        assert [c["message"] for c in seen] == ["something else"]
        log.uninstall(loop)
        assert loop.get_exception_handler() is not log
    finally:
        loop.close()
