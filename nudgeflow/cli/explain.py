"""`nudgeflow explain <user_id> [--rule R]`: why did (or didn't) a rule fire, in plain words.

It asks any worker for GET /users/<id> (the worker forwards to the owner) and
turns the state and audit timeline into sentences for a person at a terminal.
The id is percent-encoded whole (web/paths.py), so ids with `/ ? # %`,
dots or non-ASCII characters ask for exactly that user.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from nudgeflow.cli.user_route import call_user_route

_REASONS = {
    "cooldown": "the rule's cooldown had not passed since it last fired",
    "cap": "the user had reached the global message cap (limits.max_per_user)",
    "quiet_hours": "it fell in the user's quiet hours",
    "template_error": "the message template failed to render",
    "control": "the user is in the control group: exposure recorded, nothing sent",
    "best_time": "waiting for the user's best hour",
    "consent": "the user has unsubscribed from marketing (suppressed_consent)",
}
_TIMING = {  # a `send_at: {best_hour}` send: why it went when it did (engine/besttime.py)
    "best_hour": "at the user's best hour",
    "best_hour_now": "at once: the user's best hour within the window is this one",
    "no_activity_in_window": "at once: the user was never active in the hours of the window",
    "no_history": "at once: no activity recorded for the user yet",
}


def _timed(detail: dict[str, Any]) -> str:
    """'; timed at the user's best hour (Tue 19:00)', or '' for a send not timed so."""
    why = detail.get("timing")
    if why is None:
        return ""
    best = f" ({detail['best_hour']})" if detail.get("best_hour") else ""
    return f"; timed {_TIMING.get(str(why), str(why))}{best}"


def _why(d: dict[str, Any]) -> str:
    reason = d.get("reason")
    detail = d.get("detail") or {}
    outcome = d["outcome"]
    if outcome == "fired":
        late = f", {detail['lateness_s']} s late" if detail.get("late") else ""
        sent = "" if detail.get("send", True) else f" ({_REASONS['control']})"
        trigger = f"trigger {d.get('trigger_id')}, variant {d.get('variant')}{late}"
        return f"fired ({trigger}){sent}{_timed(detail)}"
    if outcome == "suppressed":
        text = _REASONS.get(reason or "", reason or "unknown reason")
        extra = f": {detail['error']}" if "error" in detail else ""
        until = f" (until {detail['until']})" if "until" in detail else ""
        return f"suppressed: {text}{until}{extra}"
    if outcome == "deferred":
        text = _REASONS.get(reason or "", str(reason))
        if reason == "best_time" and detail.get("best_hour"):
            text += f" ({detail['best_hour']} in the user's time zone)"
        return f"deferred: {text}; fires at {d.get('deadline')}"
    if outcome == "render_failed":
        what = f"template {detail['template']}" if "template" in detail else "expression"
        return f"not sent: the {what} went over its render budget ({reason}): {detail.get('error')}"
    if outcome == "condition_false":
        expr = detail.get("expression")
        return f"not sent: `when` was false at the deadline ({expr}): {reason}"
    if outcome == "cancelled":
        return f"cancelled by a {reason} event before the deadline {d.get('deadline')}"
    if outcome in ("armed", "rearmed"):
        by = f" by {reason}" if reason else ""
        return f"{outcome}{by}; due at {d.get('deadline')}"
    return f"{outcome}{f' ({reason})' if reason else ''}"


def verdict(view: dict[str, Any], rule: str) -> str:
    """One sentence about `rule` for this user: the latest decision, or why there is none."""
    armed = next((a for a in view.get("armed", []) if a["rule"] == rule), None)
    latest = next((d for d in view.get("decisions", []) if d["rule"] == rule), None)
    if armed is not None:
        when = f"due at {armed['deadline']} (in {armed['due_in_s']:.0f} s)"
        if armed["due_in_s"] < 0:
            when = f"was due at {armed['deadline']} ({-armed['due_in_s']:.0f} s ago; firing)"
        state = "deferred by quiet hours, " if armed.get("deferred") else ""
        if latest is not None and (latest["outcome"], latest.get("reason")) == (
            "deferred",
            "best_time",
        ):
            best = (latest.get("detail") or {}).get("best_hour")
            state = f"{_REASONS['best_time']}{f' ({best})' if best else ''}, "
        return f"{rule}: armed (step {armed['step']}), {state}{when}"
    if latest is None:
        return f"{rule}: no decision recorded: the rule was never armed for this user"
    return f"{rule}: {_why(latest)} at {latest['at']}"


def consent_line(view: dict[str, Any] | None) -> str:
    """'Subscription: unsubscribed from all marketing since <time>; news: ...' (DESIGN §3.2)."""
    if not view:
        return ""
    since = f" since {view['changed_at']}" if view.get("changed_at") else ""
    parts = [("subscribed" if view["subscribed"] else "unsubscribed from all marketing") + since]
    for name, c in view.get("categories", {}).items():
        choice = "subscribed" if c["subscribed"] else "unsubscribed"
        parts.append(f"{name}: {choice} since {c['changed_at']}")
    return "Subscription: " + "; ".join(parts)


def render(view: dict[str, Any], rule: str | None = None) -> str:
    """The whole explanation as text (pure: the CLI prints it, tests read it)."""
    lines = [
        f"User {view['user_id']}  (partition {view.get('partition')}, {view.get('served_by')})"
    ]
    profile = view.get("profile") or {}
    if profile:
        lines.append("Profile: " + ", ".join(f"{k}={v}" for k, v in sorted(profile.items())))
    cart = view.get("cart")
    if cart and cart.get("items"):
        items = ", ".join(
            f"{i['quantity']}x {i['product_name'] or i['product_id']}" for i in cart["items"]
        )
        currency = f" {cart['currency']}" if cart.get("currency") else ""
        lines.append(f"Cart: {items}  (value {cart['value']}{currency})")
    best = best_hours_line(view.get("best_time"))
    if best:
        lines.append(best)
    subscription = consent_line(view.get("consent"))
    if subscription:
        lines.append(subscription)
    rules = sorted(
        {a["rule"] for a in view.get("armed", [])} | {d["rule"] for d in view.get("decisions", [])}
    )
    lines.append("")
    for name in [rule] if rule else rules:
        lines.append(verdict(view, name))
    decisions = [d for d in view.get("decisions", []) if rule is None or d["rule"] == rule]
    if decisions:
        lines += ["", "Decisions (newest first):"]
        lines += [f"  {d['at']}  {d['rule']}: {_why(d)}" for d in decisions]
    deliveries = [a for a in view.get("deliveries", []) if rule is None or a["rule"] == rule]
    if deliveries:
        lines += ["", "Deliveries (newest first):"]
        for a in deliveries:
            status = a.get("status") or a.get("error") or ""
            lines.append(
                f"  {a['at']}  {a['rule']} -> {a['destination']} attempt {a['attempt']}: "
                f"{a['outcome']} {status}".rstrip()
            )
    pending = view.get("pending") or []
    if pending:
        lines += ["", f"Awaiting Kafka ack: {', '.join(p['trigger_id'] for p in pending)}"]
    return "\n".join(lines)


def best_hours_line(best_time: dict[str, Any] | None) -> str | None:
    """'Best hours (Europe/Berlin, half-life 14 days): Tue 19:00 (31%), ...' (GET /users)."""
    if not best_time:
        return None
    hours = ", ".join(f"{h['hour']} ({h['share']:.0%})" for h in best_time["best_hours"])
    zone = best_time.get("timezone", "UTC")
    return f"Best hours ({zone}, half-life {best_time.get('half_life_days')} days): " + (
        hours or "no activity recorded yet"
    )


@click.command()
@click.argument("user_id")
@click.option("--rule", default=None, help="explain only this rule")
@click.option(
    "--url",
    default="http://127.0.0.1:6066",
    show_default=True,
    help="any worker's web address (it forwards to the user's owner)",
)
@click.option("--json", "as_json", is_flag=True, help="print the raw GET /users/<id> answer")
def command(user_id: str, rule: str | None, url: str, as_json: bool) -> None:
    """Why did (or didn't) a rule fire for USER_ID? Reads GET /users/<id>.

    The admin token, if the worker has one, comes from NUDGEFLOW_API_TOKEN.
    """
    import json

    status, text = call_user_route("GET", url, user_id, timeout_s=15)
    body = json.loads(text)
    if status != 200:
        click.echo(f"error: {status}: {body.get('error', body)}", err=True)
        sys.exit(1)
    click.echo(json.dumps(body, indent=2) if as_json else render(body, rule))
