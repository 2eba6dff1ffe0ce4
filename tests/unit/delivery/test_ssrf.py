import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from pydantic import ValidationError

from nudgeflow.config.addresses import ForbiddenAddress, check_literal_url, forbidden_reason
from nudgeflow.config.destinations import Destination
from nudgeflow.delivery.ssrf import GuardedResolver, vet


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("fd00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "link-local"),
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 of 169.254.169.254
        ("2002:0a00:0001::", "private"),  # 6to4 of 10.0.0.1
        ("100.64.0.1", "not globally routable"),
    ],
)
def test_refused_addresses(address: str, reason: str) -> None:
    got = forbidden_reason(address)
    assert got is not None and got.startswith(reason)


@pytest.mark.parametrize(
    "address", ["93.184.215.14", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_public_addresses_pass(address: str) -> None:
    assert forbidden_reason(address) is None


def test_any_bad_address_refuses_the_host() -> None:
    with pytest.raises(ForbiddenAddress) as info:
        vet("rebind.example", ["93.184.215.14", "10.0.0.5"])
    assert info.value.address == "10.0.0.5"


def test_literal_urls_checked_unless_allowed() -> None:
    with pytest.raises(ForbiddenAddress):
        check_literal_url("http://169.254.169.254/latest/meta-data", allow_private=False)
    with pytest.raises(ForbiddenAddress):
        check_literal_url("http://[::1]:8080/", allow_private=False)
    check_literal_url("http://127.0.0.1:8080/", allow_private=True)
    check_literal_url("https://hooks.zapier.com/x", allow_private=False)


def test_config_refuses_private_literal() -> None:
    with pytest.raises(ValidationError, match="link-local"):
        Destination(url="http://169.254.169.254/")
    assert Destination(url="http://127.0.0.1:9/", allow_private=True).allow_private


class FakeResolver(AbstractResolver):
    def __init__(self, *addresses: str) -> None:
        self.addresses = addresses

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[ResolveResult]:  # type: ignore[override]
        return [
            ResolveResult(hostname=host, host=a, port=port, family=0, proto=0, flags=0)  # type: ignore[typeddict-item]
            for a in self.addresses
        ]

    async def close(self) -> None:
        pass


async def test_guarded_resolver_returns_only_vetted_answers() -> None:
    ok = await GuardedResolver(FakeResolver("93.184.215.14")).resolve("example.com", 443)
    assert [r["host"] for r in ok] == ["93.184.215.14"]
    with pytest.raises(ForbiddenAddress):
        await GuardedResolver(FakeResolver("93.184.215.14", "169.254.169.254")).resolve("x", 80)
