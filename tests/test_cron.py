"""Cron dialects of docs/protocol.md (compat: Vixie; strict: the reference's library)."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from shared import cron


def ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


SUNDAY = ms(2026, 11, 22)  # a Sunday, 00:00 UTC


def test_next_is_strictly_after_the_second():
    assert cron.next_after("* * * * *", ms(2026, 1, 1, 0, 0)) == ms(2026, 1, 1, 0, 1)
    assert cron.next_after("* * * * *", ms(2026, 1, 1, 0, 0) + 999) == ms(2026, 1, 1, 0, 1)
    assert cron.next_after("*/5 * * * * *", ms(2026, 1, 1) + 5999) == ms(2026, 1, 1) + 10000


def test_compat_day_of_week_is_vixie():
    monday_9 = ms(2026, 11, 23, 9)
    assert cron.next_after("0 9 * * 1", SUNDAY) == monday_9
    assert cron.next_after("0 9 * * MON", SUNDAY) == monday_9
    assert cron.next_after("0 9 * * 0", SUNDAY) == ms(2026, 11, 22, 9)
    assert cron.next_after("0 9 * * 7", SUNDAY) == ms(2026, 11, 22, 9)
    # day-of-month OR day-of-week when both are restricted
    assert cron.next_after("0 0 30 * 1", SUNDAY) == ms(2026, 11, 23)


def test_strict_day_of_week_is_the_references():
    assert cron.next_after("0 9 * * 2", SUNDAY, strict=True) == ms(2026, 11, 23, 9)  # 2 = Monday
    assert cron.next_after("0 9 * * 1", SUNDAY, strict=True) == ms(2026, 11, 22, 9)  # 1 = Sunday
    with pytest.raises(cron.CronError):
        cron.validate("0 9 * * 0", strict=True)
    # both day fields restricted: intersection (the 30th that is a Monday)
    assert cron.next_after("0 0 30 * 2", SUNDAY, strict=True) == ms(2026, 11, 30)


@pytest.mark.parametrize("expr", ["nope", "* * * *", "* * * * * * *", "@hourly", "61 * * * *", "0 0 L * *",
                                  "0 0 * * 1#2", "0 0 ? * *", "H * * * *", ""])
def test_rejects_what_the_spec_does_not_define(expr):
    with pytest.raises(cron.CronError):
        cron.validate(expr)


def test_far_future_saturates_instead_of_failing():
    assert cron.next_after("* * * * *", 2**63 - 2) == cron.NEVER
