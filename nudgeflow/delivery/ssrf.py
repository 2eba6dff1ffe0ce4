"""SSRF guard: webhooks may not reach private, loopback or link-local hosts.

A destination URL is user input; without this guard a rule could make the
worker call the cloud metadata service (169.254.169.254) or an internal
admin port. Every resolved address is checked (one bad address refuses the
host), IPv6 forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4,
Teredo) are unwrapped first, and the connection goes to the address that
was vetted -- the check lives in the aiohttp resolver -- so a second DNS
answer (rebinding) cannot swap it.
"""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from nudgeflow.config.addresses import ForbiddenAddress, forbidden_reason


def vet(host: str, addresses: list[str]) -> None:
    """Refuse the host if ANY of its addresses is forbidden."""
    if not addresses:
        raise ForbiddenAddress(host, "-", "unresolvable")
    for address in addresses:
        reason = forbidden_reason(address)
        if reason is not None:
            raise ForbiddenAddress(host, address, reason)


class GuardedResolver(AbstractResolver):
    """aiohttp resolver that only ever returns vetted public addresses."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner or ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        vet(host, [r["host"] for r in results])
        return results

    async def close(self) -> None:
        await self._inner.close()
