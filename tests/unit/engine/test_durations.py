from __future__ import annotations

import pytest

from nudgeflow.engine.durations import DurationError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("500ms", 500),
        ("0s", 0),
        ("30s", 30_000),
        ("15m", 900_000),
        ("2h", 7_200_000),
        ("7d", 604_800_000),
        (" 1h ", 3_600_000),
    ],
)
def test_parses(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["30x", "", "1.5h", "-1s", "h", "10", "1 week", "1w"])
def test_rejects_with_the_input_quoted(text: str) -> None:
    with pytest.raises(DurationError, match="invalid duration") as info:
        parse_duration(text)
    assert repr(text) in str(info.value) and "30s, 15m, 2h, 7d" in str(info.value)


def test_format_round_trips() -> None:
    for text in ("30s", "15m", "2h", "7d", "1500ms"):
        assert format_duration(parse_duration(text)) == text
