"""`nudgeflow explain`: the text a person reads for each kind of decision."""

from __future__ import annotations

from typing import Any

import msgspec
from click.testing import CliRunner

from nudgeflow.cli.explain import _why, render, verdict
from nudgeflow.cli.main import main
from nudgeflow.tables.timeline import Timeline
from nudgeflow.web.users import user_view
from tests.unit.engine.helpers import D, H, Run, ev, iso, make_engine
from tests.unit.engine.test_besttime import BERLIN, FLOW, MONDAY, _active_at_19_berlin


def _d(outcome: str, at: str, **kw: Any) -> dict[str, Any]:
    return {"user_id": "ana", "rule": kw.pop("rule", "cart"), "outcome": outcome, "at": at, **kw}


VIEW: dict[str, Any] = {
    "user_id": "ana",
    "partition": 2,
    "served_by": "http://127.0.0.1:6066",
    "profile": {"name": "Ana"},
    "cart": {
        "items": [{"product_id": "p1", "product_name": "Shoe", "price": 60.0, "quantity": 2}],
        "value": 120.0,
        "count": 2,
        "currency": "EUR",
    },
    "armed": [],
    "pending": [],
    "decisions": [
        _d(
            "fired",
            "2024-05-01T12:30:05.000Z",
            trigger_id="trg_1",
            variant="a",
            detail={"step": 0, "send": True, "late": True, "lateness_s": 5.0},
        ),
        _d(
            "armed",
            "2024-05-01T12:00:00.000Z",
            reason="cart_add",
            deadline="2024-05-01T12:30:00.000Z",
        ),
        _d(
            "suppressed",
            "2024-05-01T11:00:00.000Z",
            rule="browse",
            reason="cap",
            detail={"step": 0, "cap": 3},
        ),
    ],
    "deliveries": [
        {
            "trigger_id": "trg_1",
            "rule": "cart",
            "destination": "crm",
            "attempt": 1,
            "outcome": "delivered",
            "latency_s": 0.02,
            "at": "2024-05-01T12:30:06Z",
            "status": 200,
        },
    ],
}


def test_fired_late_says_so() -> None:
    assert verdict(VIEW, "cart") == (
        "cart: fired (trigger trg_1, variant a, 5.0 s late) at 2024-05-01T12:30:05.000Z"
    )


def test_suppressed_by_the_cap_names_the_limit() -> None:
    assert "global message cap" in verdict(VIEW, "browse")


def test_a_rule_never_armed() -> None:
    assert verdict(VIEW, "welcome") == (
        "welcome: no decision recorded: the rule was never armed for this user"
    )


def test_an_armed_rule_reports_its_deadline() -> None:
    view = {
        **VIEW,
        "armed": [
            {
                "rule": "cart",
                "step": 0,
                "deadline": "2024-05-01T13:00:00.000Z",
                "due_in_s": 90.0,
                "deferred": False,
            }
        ],
    }
    assert (
        verdict(view, "cart") == "cart: armed (step 0), due at 2024-05-01T13:00:00.000Z (in 90 s)"
    )


def test_condition_false_and_cancelled_and_control() -> None:
    view = {
        **VIEW,
        "decisions": [
            _d(
                "condition_false",
                "t3",
                reason="cart.value 40.0 > 50 is false",
                detail={"expression": "cart.value > 50"},
            ),
            _d("cancelled", "t2", rule="welcome", reason="purchase", deadline="t9"),
            _d(
                "fired",
                "t1",
                rule="promo",
                trigger_id="trg_9",
                variant="control",
                reason="control",
                detail={"send": False},
            ),
        ],
    }
    assert "`when` was false at the deadline (cart.value > 50)" in verdict(view, "cart")
    assert (
        verdict(view, "welcome")
        == "welcome: cancelled by a purchase event before the deadline t9 at t2"
    )
    assert "control group" in verdict(view, "promo")


def test_render_with_rule_filters_the_history() -> None:
    text = render(VIEW, "cart")
    assert "Cart: 2x Shoe  (value 120.0 EUR)" in text
    assert "crm attempt 1: delivered 200" in text
    assert "browse" not in text
    assert "browse" in render(VIEW)


def test_cli_reports_an_unreachable_worker() -> None:
    result = CliRunner().invoke(main, ["explain", "ana", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "cannot reach http://127.0.0.1:9" in result.output


def test_a_best_time_send_says_the_best_hours_and_why_it_waits_then_goes() -> None:
    """From a real engine's state and decisions, through GET /users' view as JSON."""
    run = Run(make_engine(FLOW.replace("WITHIN", "24h")))
    _active_at_19_berlin(run, days=2)  # Mon and Tue 19:00 Berlin (17:00 UTC)
    tuesday_noon, best = MONDAY + 8 * D + 10 * H, MONDAY + 8 * D + 17 * H

    def shown(now: int) -> str:
        audited = Timeline(decisions=[d for d in run.decisions() if d.outcome != "rearmed"])
        view = msgspec.json.decode(msgspec.json.encode(user_view("u", run.state, audited, now)))
        return render(view, "j")

    run.send(ev("cart_add", tuesday_noon, "a", traits={"timezone": BERLIN}))
    waiting = shown(tuesday_noon)
    assert "Best hours (Europe/Berlin, half-life 14 days): Tue 19:00 (" in waiting
    assert ", Mon 19:00 (" in waiting
    assert (
        "j: armed (step 0), waiting for the user's best hour (Tue 19:00),"
        f" due at {iso(best)} (in 25200 s)"
    ) in waiting
    assert (
        f"deferred: waiting for the user's best hour (Tue 19:00 in the user's time zone);"
        f" fires at {iso(best)}"
    ) in waiting
    run.tick(best)
    [trigger] = run.triggers()
    assert (
        f"fired (trigger {trigger.trigger_id}, variant default); timed at the user's best hour"
        in (shown(best))
    )
    fresh = Run(make_engine(FLOW.replace("WITHIN", "24h"))).send(ev("cart_add", tuesday_noon, "a"))
    [fired] = fresh.decisions("fired")
    assert _why(msgspec.to_builtins(fired)).endswith(
        "; timed at once: no activity recorded for the user yet"
    )


def test_an_unsubscribed_user_shows_when_and_why_the_send_was_suppressed() -> None:
    engine = make_engine(
        """
        consent: {unsubscribe_events: [unsubscribe], subscribe_events: [subscribe]}
        rules:
          - {name: promo, trigger: cart_add, delay: 1h}
        """
    )
    run = Run(engine).send(
        ev("unsubscribe", 0, user="ana"),
        ev("subscribe", H, user="ana", category="news"),
        ev("cart_add", 2 * H, user="ana"),
    )
    run.tick(3 * H)
    assert run.state is not None
    view = user_view("ana", run.state, Timeline(decisions=run.decisions()), 3 * H)
    view = msgspec.json.decode(msgspec.json.encode(view))  # as GET /users/<id> sends it
    text = render(view)
    assert f"Subscription: unsubscribed from all marketing since {iso(0)}" in text
    assert f"news: subscribed since {iso(H)}" in text
    assert verdict(view, "promo") == (
        f"promo: suppressed: the user has unsubscribed from marketing (suppressed_consent) "
        f"at {iso(3 * H)}"
    )
