"""The deliver agents end to end: real Kafka, a real worker process, real receivers."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from tests.fixtures.kafka import consume_all
from tests.fixtures.receivers import ReceiverFactory, hang, respond
from tests.integration.delivery.conftest import StartWorker, make_trigger, wait_until

pytestmark = pytest.mark.kafka

SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def local(url: str, **kw: Any) -> dict[str, Any]:
    return {"url": url, "secret": SECRET, "allow_private": True, **kw}


async def test_each_outcome_ends_as_specified(
    start_deliver_worker: StartWorker, receiver_factory: ReceiverFactory, closed_port: int
) -> None:
    ok = await receiver_factory()
    flaky = await receiver_factory(script=[respond(500), respond(500)])
    limited = await receiver_factory(script=[respond(429, retry_after="1")])
    hanging = await receiver_factory(default=hang(30))
    gone = await receiver_factory(default=respond(410))
    moved = await receiver_factory(default=respond(302, location="/elsewhere"))
    guarded = await receiver_factory()
    worker = await start_deliver_worker(
        {
            "ok": local(ok.url),
            "flaky": local(flaky.url),
            "limited": local(limited.url),
            "hanging": local(hanging.url, timeout=0.5),
            "gone": local(gone.url),
            "moved": local(moved.url),
            "refused": local(f"http://127.0.0.1:{closed_port}/"),
            "guarded": {"url": f"http://localhost:{guarded.port}/hook"},  # no allow_private
        }
    )
    names = ["ok", "flaky", "limited", "hanging", "gone", "moved", "refused", "guarded"]
    control = make_trigger("control", ["ok"])
    control.send = False
    await worker.produce([make_trigger(n, [n]) for n in names] + [control])

    await wait_until(
        lambda: ok.ids(200) and flaky.ids(200) and limited.ids(200),
        60,
        "the three eventual successes",
        worker,
    )
    t = worker.topics
    dlq = await consume_all(worker.spec["broker"], t.triggers_dlq, min_count=5, timeout=30)
    reasons = {
        r.headers["nudgeflow-destination"].decode(): (
            r.headers["nudgeflow-reason"].decode(),
            r.headers["nudgeflow-attempts"].decode(),
            r.headers["nudgeflow-last-status"].decode(),
        )
        for r in dlq
    }
    assert reasons == {
        "gone": ("gone", "1", "410"),
        "moved": ("redirect", "1", "302"),
        "guarded": ("ssrf", "1", "ssrf"),
        "hanging": ("retries_exhausted", "4", "timeout"),
        "refused": ("retries_exhausted", "4", "connection"),
    }
    assert all(int(r.headers["nudgeflow-first-attempt-at"]) > 0 for r in dlq)
    assert ok.ids() == ["trg-ok"]  # the control (send=False) record was never sent
    assert flaky.ids() == ["trg-flaky"] * 3
    assert limited.ids() == ["trg-limited"] * 2
    assert limited.requests[1].at - limited.requests[0].at >= 1.0  # Retry-After: 1
    assert len(hanging.requests) == 4 and len(moved.requests) == 1 and guarded.requests == []
    body = msgspec.json.decode(ok.requests[0].body)
    assert body["trigger_id"] == "trg-ok" and body["user_id"] == "user-ok"

    audit = await consume_all(worker.spec["broker"], t.deliveries, min_count=17, timeout=30)
    by_dest: dict[str, list[dict[str, Any]]] = {}
    for r in audit:
        rec = msgspec.json.decode(r.value or b"")
        by_dest.setdefault(rec["destination"], []).append(rec)
    assert [a["status"] for a in sorted(by_dest["flaky"], key=lambda a: a["attempt"])] == [
        500,
        500,
        200,
    ]
    assert [a["error"] for a in by_dest["hanging"]] == ["timeout"] * 4
    assert all(a["latency_s"] >= 0 for recs in by_dest.values() for a in recs)

    # Upstream writes the delivered trigger again: the receiver does not see it twice.
    await worker.produce([make_trigger("ok", ["ok"])])
    await worker.produce([make_trigger("ok-2", ["ok"])])
    await wait_until(lambda: "trg-ok-2" in ok.ids(), 30, "the marker trigger", worker)
    assert ok.ids() == ["trg-ok", "trg-ok-2"]


async def test_replayed_dead_letter_is_delivered_once(
    start_deliver_worker: StartWorker, receiver_factory: ReceiverFactory
) -> None:
    from nudgeflow.cli.dlq import replay

    rx = await receiver_factory(script=[respond(410)])
    worker = await start_deliver_worker({"d": local(rx.url)})
    await worker.produce([make_trigger(1, ["d"])])
    await wait_until(lambda: len(rx.requests) == 1, 60, "the 410", worker)
    dlq = await consume_all(worker.spec["broker"], worker.topics.triggers_dlq, min_count=1)
    assert len(dlq) == 1
    # an upstream duplicate of a dead trigger is not retried...
    await worker.produce([make_trigger(1, ["d"])])
    assert await replay(worker.spec["broker"], worker.spec["prefix"], "other_rule", None) == 0
    assert await replay(worker.spec["broker"], worker.spec["prefix"], "abandoned_cart", None) == 1
    await wait_until(lambda: rx.ids(200) == ["trg-1"], 30, "the replayed delivery", worker)
    # ...and replaying again does not send a delivered trigger twice
    assert await replay(worker.spec["broker"], worker.spec["prefix"], None, None) == 1
    await worker.produce([make_trigger(2, ["d"])])
    await wait_until(lambda: "trg-2" in rx.ids(), 30, "the marker trigger", worker)
    assert rx.ids() == ["trg-1", "trg-1", "trg-2"]
