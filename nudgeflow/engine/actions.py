"""What the pure engine returns: records for the shell to send.

The engine never performs I/O; it hands back these values and the Faust
agents (or the backtest) decide where they go:

* `Trigger`    -> `<prefix>.triggers` (and from there, webhooks)
* `Decision`   -> `<prefix>.decisions` (the audit trail: why did/didn't it fire)
* `Conversion` -> `<prefix>.conversions`
"""

from __future__ import annotations

from typing import Literal

import msgspec

Scalar = str | int | float | bool | None

DecisionOutcome = Literal[
    "armed",  # a trigger event armed the rule (deadline set)
    "rearmed",  # activity pushed an inactivity deadline
    "fired",  # a trigger record was produced
    "cancelled",  # a cancel_on event disarmed the rule
    "condition_false",  # `when` was false at fire time
    "suppressed",  # reason: consent | cooldown | cap | quiet_hours | template_error | ...
    "render_failed",  # a template, `when` or `entry` went over its budget: reason = the limit
    "deferred",  # quiet hours with action: defer; fires when the window opens
    "duplicate",  # event_id already applied for this user
    # journeys (DESIGN §3.1)
    "not_entered",  # a trigger did not start a run: reason entry | reentry | instance
    "already_active",  # a trigger for a run that is already active (and no `restart`)
    "waited",  # an `until` wait ended: reason = the event type, or "timeout"
    "branched",  # a branch went to detail.to: reason "then" | "else"
    "split",  # a split assigned a path: reason = the path's name
    "exited",  # a journey's run ended: reason exit | completed | restarted
    "evicted",  # a run ended to keep the runs per rule per user within limits.max_runs
    "rule_removed",  # live rules: the run's rule is gone from the live version
]


class Trigger(msgspec.Struct, kw_only=True, omit_defaults=False):
    """A trigger record (DESIGN §4). Flat, snake_case, ISO 8601 UTC times.

    `fields` holds the flat extras a Zapier user maps without code
    (user_name, user_email, cart_value, cart_item_count, cart_first_item_name,
    currency, ...); `to_payload` merges them into the top level.
    """

    trigger_id: str
    rule: str
    user_id: str
    variant: str
    step: int | str  # the step's label: the series index, or a journey step's name or index
    fired_at: str
    deadline: str
    armed_at: str
    late: bool
    lateness_s: float
    message: str
    destinations: list[str]
    send: bool = True  # False for a control-group exposure: recorded, never delivered
    fields: dict[str, Scalar] = {}
    rule_version: int = 0  # the live rules version that made it (DESIGN §3.3; 0: none)

    def to_payload(self) -> dict[str, Scalar]:
        """The flat webhook body: no nested objects, no arrays of objects."""
        payload: dict[str, Scalar] = dict(self.fields)
        payload.update(
            trigger_id=self.trigger_id,
            rule=self.rule,
            user_id=self.user_id,
            variant=self.variant,
            step=self.step,
            fired_at=self.fired_at,
            deadline=self.deadline,
            armed_at=self.armed_at,
            late=self.late,
            lateness_s=self.lateness_s,
            message=self.message,
        )
        return payload


class Decision(msgspec.Struct, kw_only=True, omit_defaults=True):
    user_id: str
    rule: str
    outcome: DecisionOutcome
    at: str  # ISO 8601 UTC, logical time of the decision
    reason: str | None = None
    trigger_id: str | None = None
    variant: str | None = None
    deadline: str | None = None
    detail: dict[str, Scalar] = {}
    rule_version: int = 0  # the live rules version that made it (DESIGN §3.3; 0: none)


class Conversion(msgspec.Struct, kw_only=True, omit_defaults=True):
    user_id: str
    rule: str
    variant: str
    trigger_id: str
    kind: Literal["conversion", "opened", "clicked"]
    event_type: str
    at: str
    exposed_at: str
    step: int | str | None = None  # the step whose send it is attributed to
    revenue: float | None = None  # a conversion's properties.revenue / total / value


Action = Trigger | Decision | Conversion

_encoder = msgspec.json.Encoder()


def encode_action(action: Action) -> bytes:
    return _encoder.encode(action)


def decode_trigger(data: bytes) -> Trigger:
    return msgspec.json.decode(data, type=Trigger)
