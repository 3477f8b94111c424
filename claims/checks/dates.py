"""FHIR dates as the intervals they stand for, to say when one is *certainly* after another.

FHIR allows partial dates (``2014``, ``2014-08``, ``2014-08-16``) and dateTimes with a zone. A
date names a local day whose zone we do not know, so its interval is widened by 14 hours on each
side (the widest UTC offsets): a check fails only when the order is wrong in every zone.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_FHIR = re.compile(
    r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:\d{2})?)?)?)?"
)
_ZONES = timedelta(hours=14)


def interval(value: object) -> tuple[datetime, datetime] | None:
    """``[start, end]`` of a FHIR date, dateTime or instant (aware, UTC); None if unreadable."""
    if not isinstance(value, str) or not (m := _FHIR.fullmatch(value)):
        return None
    year, month, day, hour, minute, second, fraction, zone = m.groups()
    try:
        if hour is not None:
            start = datetime(
                int(year), int(month), int(day), int(hour), int(minute), int(second or 0),
                int((fraction or "0")[:6].ljust(6, "0")),
                tzinfo=UTC,
            )  # fmt: skip
            if zone and zone != "Z":
                sign = 1 if zone[0] == "+" else -1
                start -= sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
            return start, start
        if day is not None:
            start = datetime(int(year), int(month), int(day), tzinfo=UTC)
            end = start + timedelta(days=1)
        elif month is not None:
            start = datetime(int(year), int(month), 1, tzinfo=UTC)
            end = datetime(int(year) + int(month) // 12, int(month) % 12 + 1, 1, tzinfo=UTC)
        else:
            start = datetime(int(year), 1, 1, tzinfo=UTC)
            end = datetime(int(year) + 1, 1, 1, tzinfo=UTC)
    except ValueError:
        return None
    return start - _ZONES, end + _ZONES


def certainly_after(a: tuple[datetime, datetime], b: tuple[datetime, datetime]) -> bool:
    """True when every instant of ``a`` is later than every instant of ``b``."""
    return a[0] > b[1]


def point(when: datetime) -> tuple[datetime, datetime]:
    return when, when
