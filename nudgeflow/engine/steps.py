"""The compiled steps of a rule: the program its runs walk (DESIGN §3.1).

Every rule is a program of nodes. A node may wait (a delay, inactivity, or an event
`until` a timeout) and then act (send, branch, split, exit); `next` is where a run
goes after it. Journeys compile one YAML step to one node (a wait or an action);
the older forms compile to the same nodes, so they are the one- and n-step cases of
the same machine: `delay`/`inactivity` + `template` is one node that waits and
sends, and `steps` of `{delay, template}` is one such node per step, its wait
counted from the arming (`series`). A node's `label` is what records name (its
`name`, else its index), so the old forms keep their step numbers and trigger ids.

A run remembers its node's index and, when the node is named, its name (`Armed.name`).
Under a new rules version (DESIGN §3.3) `resume` finds it again: at the node of the
same name, else at the same index, else nowhere (the run ends, `rule_removed`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from nudgeflow.engine.expressions import Expression

if TYPE_CHECKING:
    from nudgeflow.engine.state import Armed

WaitKind = Literal["rule", "series", "delay", "inactivity", "until"]
Label = int | str


@dataclass(frozen=True, slots=True)
class Wait:
    """How long a run stays at a node before its action (or, for `until`, its timeout).

    * `rule`: the old forms' first step: the rule's inactivity or delay, which an
      experiment variant may override (resolved per run in journey.py);
    * `series`: `armed_at + ms` (a later `{delay, template}` step), never before now;
    * `delay`: `ms` after the run arrived;
    * `inactivity`: `ms` after the last `activity` event (None: any event);
    * `until`: an event of a type in `until` (and `where` true on it) within `ms`:
      it goes to `then`, the timeout to `otherwise` (None: the next node).
    """

    kind: WaitKind
    ms: int
    activity: frozenset[str] | None = None
    until: frozenset[str] = frozenset()
    where: Expression | None = None
    then: int | None = None
    otherwise: int | None = None


@dataclass(frozen=True, slots=True)
class SendAt:
    """`send_at: {best_hour: true, within: D}` (engine/besttime.py)."""

    within_ms: int


@dataclass(frozen=True, slots=True)
class Send:
    template: str | None
    destinations: tuple[str, ...]
    when: Expression | None = None  # besides the rule's own `when`
    send_at: SendAt | None = None


@dataclass(frozen=True, slots=True)
class Branch:
    condition: Expression
    then: int | None  # None: the next node
    otherwise: int | None


@dataclass(frozen=True, slots=True)
class Path:
    name: str
    weight: float
    then: int | None


@dataclass(frozen=True, slots=True)
class Split:
    """Weighted paths, assigned per user by the variants' hash (experiments.py)."""

    paths: tuple[Path, ...]

    @property
    def weights(self) -> dict[str, float]:
        return {p.name: p.weight for p in self.paths}

    def target(self, name: str) -> int | None:
        for p in self.paths:
            if p.name == name:
                return p.then
        return None


@dataclass(frozen=True, slots=True)
class Exit:
    pass


Action = Send | Branch | Split | Exit


@dataclass(frozen=True, slots=True)
class Node:
    label: Label
    wait: Wait | None
    action: Action | None
    next: int | None  # None: the run ends after this node

    @property
    def kind(self) -> str:
        """`wait`, `send`, `branch`, `split` or `exit` (a waiting send says `send`)."""
        if self.action is None:
            return "wait"
        return type(self.action).__name__.lower()


REENTRY_ENDED = "ended"  # the default: a new run once the last one ended
REENTRY_NEVER = "never"
REENTRY_ALWAYS = "always"  # every trigger starts its own run (up to Limits.max_runs)
REENTRY_AFTER = "after"  # once `after_ms` have passed since the last run ended


@dataclass(frozen=True, slots=True)
class Reentry:
    mode: str = REENTRY_ENDED
    after_ms: int = 0

    @property
    def remembers(self) -> bool:
        """Whether ended (or, for `never`, entered) runs must be remembered in the state."""
        return self.mode == REENTRY_NEVER or (self.mode == REENTRY_AFTER and self.after_ms > 0)


def series_program(
    delays: tuple[int, ...], templates: tuple[str | None, ...], destinations: tuple[str, ...]
) -> tuple[Node, ...]:
    """The old forms: node k waits (node 0 the rule's way, later ones from the arming) and
    sends step k's template."""
    last = len(delays) - 1
    return tuple(
        Node(
            label=k,
            wait=Wait("rule", delays[0]) if k == 0 else Wait("series", delays[k]),
            action=Send(templates[k], destinations),
            next=k + 1 if k < last else None,
        )
        for k in range(len(delays))
    )


def label_of(program: tuple[Node, ...], index: int) -> Label:
    return program[index].label if 0 <= index < len(program) else index


def resume(program: tuple[Node, ...], run: Armed) -> bool:
    """Whether `run` has a node in `program`; when the program is another version than
    the one the run arrived under and its node moved, the run is moved with it: to the
    node of the same name (else the same index; unnamed nodes are named by their index).
    False: neither exists, the run cannot go on."""
    step, name = run.step, run.name
    if step < len(program) and program[step].label == (step if name is None else name):
        return True  # the same node: every event and due run of an unchanged version
    if name is not None:
        for index, node in enumerate(program):
            if node.label == name:
                step = index
                break
    if not 0 <= step < len(program):
        return False
    label = program[step].label
    run.step = step
    run.name = label if isinstance(label, str) else None
    return True
