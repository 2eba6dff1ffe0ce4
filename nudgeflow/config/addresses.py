"""Which addresses a webhook may call: public unicast ones, unless `allow_private` is set.

Pure (no DNS): the config checks a destination URL that names an IP literally when it is
loaded, and delivery/ssrf.py applies the same verdict to every resolved address at send
time. IPv6 forms that embed an IPv4 address (IPv4-mapped, NAT64, 6to4, Teredo) are
judged by the address they carry.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenAddress(OSError):
    """Raised (an OSError, so aiohttp wraps it as a connector error) on refusal."""

    def __init__(self, host: str, address: str, reason: str) -> None:
        super().__init__(f"{host}: {address} is {reason}; set allow_private to permit it")
        self.host = host
        self.address = address
        self.reason = reason


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found: list[ipaddress.IPv4Address] = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found.extend(ip.teredo)
    return found


def _own_reason(ip: IPAddress) -> str | None:
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "not globally routable"
    return None


def forbidden_reason(address: str | IPAddress) -> str | None:
    """Why an address may not be called, or None when it is a public unicast one."""
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id:
            ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
        for inner in _embedded_v4(ip):
            reason = _own_reason(inner)
            if reason is not None:
                return f"{reason} (embedded in {ip})"
        if ip.ipv4_mapped is not None or ip in _NAT64:
            return None  # judged by the IPv4 address it stands for
    return _own_reason(ip)


def literal_ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def check_literal_url(url: str, allow_private: bool) -> None:
    """Config-time and send-time check for URLs that name an IP (no DNS involved)."""
    if allow_private:
        return
    host = urlsplit(url).hostname or ""
    ip = literal_ip(host)
    if ip is None:
        return  # a name: judged on its resolved addresses by GuardedResolver
    reason = forbidden_reason(ip)
    if reason is not None:
        raise ForbiddenAddress(host, str(ip), reason)
