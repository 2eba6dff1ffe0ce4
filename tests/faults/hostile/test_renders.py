"""A user whose data takes a render over budget loses that one send (issue 21 item 1).

Found: `(((10**64)**64)**64)**64` rendered for 25 s in one C call; nested `{% for %}` over
`range(user.n)` took 4.3 s at n = 6,000; `'%0200000000d' % 1` and `'a'|center(200000000)`
built 200 MB. The start-up check renders one sample user, so templates slow only for some
users passed it, and with two workers one such event stalled `/health` for 51 s, expired
the session 7 times and sent webhooks 3-4 times.

Now: against the two live workers, one `greet` of a hostile user (traits that take each
template over one limit) is one `render_failed` decision per rule on the audit topic,
naming the limit; nothing is sent to that user, nothing is dead-lettered, both workers
keep answering, and a bystander's `greet` right behind it fires every rule.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import msgspec
import pytest

from tests.faults.hostile.conftest import HOSTILE_RULES, Pair, eventually
from tests.fixtures.kafka import consume_all

pytestmark = pytest.mark.kafka

# rule -> the limit the hostile user's render goes over
EXPECTED = {
    "render_tower": "int_bits",  # k = 64: (((10**64)**64)**64)**64
    "render_loops": "loop_iterations",  # n = 6,000: 36 M iterations asked
    "render_printf": "string_length",  # '%0*d' % (200000000, 1)
    "render_center": "string_length",  # 'a'|center(200000000)
    "render_round": "int_bits",  # cart.count|round(-10**9): 10 ** 10**9 in one C call
    "render_when": "string_length",  # when: ('x' * 200000000)|length > 0
}
HOSTILE_TRAITS = {"k": 64, "n": 6_000, "w": 200_000_000, "p": -1_000_000_000}


def _by_user(records: list[Any], prefix: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        value = msgspec.json.decode(r.value or b"{}")
        user = value.get("user_id", "")
        if user.startswith(prefix):
            out.setdefault(user, []).append(value)
    return out


async def _health_ms(url: str) -> float:
    started = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout) as s, s.get(url + "/health") as resp:
        assert resp.status == 200
    return (time.perf_counter() - started) * 1000


async def test_a_hostile_users_renders_are_render_failed_and_a_bystander_fires(
    pair: Pair,
) -> None:
    assert set(EXPECTED) == {*HOSTILE_RULES, "render_when"}
    prefix = f"render-{pair.tag}-"
    mallory, ana = prefix + "mallory", prefix + "ana"
    now = int(time.time() * 1000)
    events = [
        {"user_id": mallory, "type": "greet", "ts": now, "traits": HOSTILE_TRAITS},
        {"user_id": ana, "type": "greet", "ts": now, "traits": {"name": "Ana"}},
    ]
    started = time.perf_counter()
    status, body = await pair.a.post_events(events)
    assert status == 202, body

    async def both_decided() -> dict[str, list[dict[str, Any]]]:
        decided = await consume_all(pair.broker, f"{pair.prefix}.decisions", timeout=10)
        users = _by_user(decided, prefix)
        assert len(users.get(mallory, [])) >= len(EXPECTED), users.get(mallory)
        assert len(users.get(ana, [])) >= len(EXPECTED), users.get(ana)
        return users

    users = await eventually(both_decided, timeout=90)
    elapsed = time.perf_counter() - started
    failed = {d["rule"]: d for d in users[mallory] if d["outcome"] == "render_failed"}
    assert {rule: d["reason"] for rule, d in failed.items()} == EXPECTED, users[mallory]
    for rule, d in failed.items():
        assert f"budget exceeded: {EXPECTED[rule]} > " in d["detail"]["error"], d
    assert [d for d in users[mallory] if d["outcome"] != "render_failed"] == []
    assert sorted(d["rule"] for d in users[ana] if d["outcome"] == "fired") == sorted(EXPECTED)

    triggers = _by_user(await consume_all(pair.broker, f"{pair.prefix}.triggers"), prefix)
    assert mallory not in triggers  # nothing rendered, nothing sent
    assert sorted(t["rule"] for t in triggers[ana]) == sorted(EXPECTED)
    dlq = _by_user(await consume_all(pair.broker, f"{pair.prefix}.events.dlq"), prefix)
    assert dlq == {}  # not a poison record: no attempt failed
    health = [await _health_ms(w.url) for w in pair.workers]
    assert all(w.proc is not None and w.proc.poll() is None for w in pair.workers)
    print(
        f"\nrender_failed x{len(failed)} and the bystander's {len(EXPECTED)} sends decided "
        f"{elapsed:.2f} s after the POST; /health then {health[0]:.1f} / {health[1]:.1f} ms"
    )
