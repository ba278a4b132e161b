"""Cron expressions (docs/protocol.md#68-cron): 5-field and seconds-first 6-field, evaluated in UTC.

Compat uses the standard (Vixie) dialect: 0 or 7 = Sunday, day-of-month OR day-of-week.
Strict reproduces the reference's library: 1 = Sunday ... 7 = Saturday, the two day fields ANDed.
"""
from __future__ import annotations

import re
from functools import lru_cache

from croniter import croniter

NEVER = 2**63 - 1  # the largest instant every store can hold


class CronError(ValueError):
    pass


_DOW_NUM = re.compile(r"\d+")
_NAMES = re.compile(r"JAN|FEB|MAR|APR|MAY|JUN|JUL|AUG|SEP|OCT|NOV|DEC|SUN|MON|TUE|WED|THU|FRI|SAT")
_FIELD = re.compile(r"[0-9*,/-]+")


def _strict_dow(field: str) -> str:
    def shift(m: re.Match[str]) -> str:
        n = int(m.group(0))
        if not 1 <= n <= 7:
            raise CronError("day-of-week out of range")
        return str(n - 1)

    # step values (`*/2`) are not day numbers; shift only range/list members
    parts = []
    for item in field.split(","):
        base, _, step = item.partition("/")
        parts.append(_DOW_NUM.sub(shift, base) + (f"/{step}" if step else ""))
    return ",".join(parts)


@lru_cache(maxsize=1024)
def _compile(expr: str, strict: bool) -> tuple[str, bool, bool]:
    fields = expr.split()
    if len(fields) not in (5, 6):
        raise CronError("expected 5 or 6 fields")
    seconds = len(fields) == 6
    if strict:
        fields[-1] = _strict_dow(fields[-1])
    norm = " ".join(fields)
    for f in fields:  # only the documented syntax: numbers, names, *, ranges, lists, steps
        if not _FIELD.fullmatch(_NAMES.sub("0", f.upper())):
            raise CronError(f"unsupported cron field {f!r}")
    try:
        croniter(norm, 0, day_or=not strict, second_at_beginning=seconds).get_next(float)
    except Exception as e:  # croniter raises several exception types for bad input
        raise CronError(str(e)) from e
    return norm, not strict, seconds


def validate(expr: str, strict: bool = False) -> None:
    _compile(expr, strict)


def next_after(expr: str, after_ms: int, strict: bool = False) -> int:
    """Earliest matching instant strictly later than floor(after_ms / 1000) s, in ms."""
    norm, day_or, seconds = _compile(expr, strict)
    try:
        it = croniter(norm, after_ms // 1000, day_or=day_or, second_at_beginning=seconds)
        return min(int(it.get_next(float)) * 1000, NEVER)
    except (ValueError, OverflowError, ArithmeticError):
        return NEVER  # past year 9999: the schedule will not fire again
