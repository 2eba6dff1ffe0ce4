"""Live audit tests: configs and a helper to poll a worker's JSON routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

CONFIGS = Path(__file__).parent / "configs"


@pytest.fixture
def audit_config() -> Path:
    return CONFIGS / "audit.yaml"


async def get_json(url: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as s,
        s.get(url) as resp,
    ):
        return resp.status, await resp.json(content_type=None)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 60.0, every: float = 0.5
) -> Any:
    """Poll `check` until it returns a truthy value (AssertionErrors count as not yet)."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
        except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
            last = exc
        await asyncio.sleep(every)
    raise AssertionError(f"condition not met after {timeout}s: {last!r}")
