"""The timestamp of every line."""

from __future__ import annotations

import time


class UTCClock:
    """ISO 8601 UTC timestamps with microseconds, the seconds part formatted once per
    second: ``datetime.isoformat`` would be the most expensive step of a log call."""

    __slots__ = ("_current",)

    def __init__(self) -> None:
        self._current: tuple[int, str] = (-1, "")

    def stamp(self, created: float | None = None) -> str:
        if created is None:
            # Integer nanoseconds: no float rounding, and no format spec to parse below.
            second, micro = divmod(time.time_ns() // 1000, 1_000_000)
        else:
            second = int(created)
            micro = int((created - second) * 1_000_000)
        cached_second, prefix = self._current  # one read: threads never see a torn pair
        if second != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._current = (second, prefix)
        # The microseconds zero-padded to six digits, without a format spec.
        return f"{prefix}{str(1_000_000 + micro)[1:]}Z"


clock = UTCClock()
