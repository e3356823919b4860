"""meta.lastUpdated as written must parse back to exactly the stored microsecond; otherwise
`_lastUpdated=gt<that value>` or `_since` would include or drop the resource itself."""

from __future__ import annotations

import random

from app.fhir.interactions import instant, parse_instant_param
from app.store.query import range_us


def test_instants_round_trip_to_the_microsecond() -> None:
    rng = random.Random(4)
    for _ in range(20000):
        us = 1_500_000_000_000_000 + rng.randrange(10**15)
        text = instant(us)
        assert parse_instant_param("_since", text) == us
        assert range_us(text) == (us, us + 1)
    assert range_us("2020-01-01T00:00:00Z") == (1_577_836_800_000_000, 1_577_836_801_000_000)
    assert range_us("2020-01-01T00:00:00.5+01:00") == (1_577_833_200_500_000, 1_577_833_200_600_000)


def test_instant_format() -> None:
    assert instant(0) == "1970-01-01T00:00:00.000000Z"
    assert instant(1_764_749_520_123_456) == "2025-12-03T08:12:00.123456Z"
