"""Topic names, derived from one configurable prefix (default `nudgeflow`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicNames:
    prefix: str = "nudgeflow"

    def _name(self, suffix: str) -> str:
        return f"{self.prefix}.{suffix}"

    @property
    def events(self) -> str:
        """Upstream producers write here, keyed by user id or not at all."""
        return self._name("events")

    @property
    def events_dlq(self) -> str:
        return self._name("events.dlq")

    @property
    def events_by_user(self) -> str:
        """Internal: validated events re-keyed by user id (co-partitioned with state)."""
        return self._name("events.by-user")

    @property
    def ticks(self) -> str:
        """Internal: timer ticks, one partition per state partition."""
        return self._name("ticks")

    @property
    def triggers(self) -> str:
        return self._name("triggers")

    @property
    def triggers_dlq(self) -> str:
        return self._name("triggers.dlq")

    def triggers_retry(self, tier: int) -> str:
        """Retry tier N holds deliveries waiting for their N-th retry delay."""
        return self._name(f"triggers.retry.{tier}")

    @property
    def decisions(self) -> str:
        return self._name("decisions")

    @property
    def deliveries(self) -> str:
        return self._name("deliveries")

    @property
    def conversions(self) -> str:
        return self._name("conversions")

    @property
    def erasures(self) -> str:
        """One audit record per erased user, without personal data (tables/erasure.py)."""
        return self._name("erasures")

    @property
    def rules(self) -> str:
        """The rules versions: compacted, one partition (config/versions.py)."""
        return self._name("rules")
