"""The bare Faust baseline's command line: what the bench spawns is what the agent runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nudgeflow.bench.bare_faust import BareFaust, answer


@pytest.mark.parametrize("out_topic", [None, "p.triggers"])
def test_the_command_line_reads_back_as_the_same_agent(out_topic: str | None) -> None:
    spec = BareFaust("127.0.0.1:9092", "p.events", "p-bare", Path("/d/p"), 4, 0, out_topic)
    cmd = spec.command()
    assert cmd[1:3] == ["-m", "nudgeflow.bench.bare_faust"]
    assert BareFaust.parse(cmd[3:]) == spec


def test_an_answer_names_the_ping_s_user_as_its_trigger_id() -> None:
    assert json.loads(answer(b"r1000-7")) == {"trigger_id": "r1000-7"}
