"""The JSON renderer: one orjson line per event, shortened to ``LOG_MAX_LINE_BYTES``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from structlog.typing import EventDict, WrappedLogger

from .._redact import Redactor

_TRUNCATED = "...[{} characters cut]"
#: Frames a shortened traceback keeps at each end.
_FRAMES_KEPT = 5


def _shorten(line: dict[str, Any], excess: int) -> bool:
    """Cut about *excess* characters from *line*: a traceback's middle frames first,
    then the longest string values, each keeping its head. False if nothing is left
    to cut."""
    exception = line.get("exception")
    if isinstance(exception, list):
        for chained in exception:
            frames = chained.get("frames") if isinstance(chained, dict) else None
            if isinstance(frames, list) and len(frames) > 2 * _FRAMES_KEPT + 1:
                omitted = len(frames) - 2 * _FRAMES_KEPT
                chained["frames"] = [
                    *frames[:_FRAMES_KEPT],
                    {"frames_omitted": omitted},
                    *frames[-_FRAMES_KEPT:],
                ]
                return True
    elif isinstance(exception, str):
        lines = exception.splitlines()
        if len(lines) > 4 * _FRAMES_KEPT + 1:
            omitted = len(lines) - 4 * _FRAMES_KEPT
            line["exception"] = "\n".join(
                [
                    *lines[: 2 * _FRAMES_KEPT],
                    f"... {omitted} lines cut ...",
                    *lines[-2 * _FRAMES_KEPT :],
                ]
            )
            return True
    candidates = [
        (len(value), key)
        for key, value in line.items()
        if isinstance(value, str) and key not in _FIXED_FIELDS and len(value) > 64
    ]
    if not candidates:
        return False
    length, key = max(candidates)
    keep = max(64, length - excess - 32)
    if keep >= length:
        return False
    line[key] = line[key][:keep] + _TRUNCATED.format(length - keep)
    return True


# The fields that say what a line is: never shortened.
_FIXED_FIELDS = frozenset({"timestamp", "level", "logger", "service", "environment"})


class JSONRenderer:
    def __init__(self, redactor: Callable[[], Redactor], max_bytes: int | None = None) -> None:
        self._redactor = redactor
        self._max_bytes = max_bytes

    def _default(self, value: Any) -> Any:
        try:
            text = str(value)
        except Exception:  # a value whose __str__ raises still leaves a line behind
            text = f"<{type(value).__name__} that cannot be shown>"
        return self._redactor().redact_text(text)

    def __call__(self, _: WrappedLogger, __: str, event_dict: EventDict) -> str:
        return self.render(event_dict)

    def render(self, event_dict: EventDict) -> str:
        """The line for *event_dict*, within ``LOG_MAX_LINE_BYTES``."""
        rendered = self._render(event_dict)
        limit = self._max_bytes
        # Characters are at most 4 bytes: most lines are known to fit without encoding.
        if limit is None or len(rendered) * 4 <= limit:
            return rendered
        return self._fit(event_dict, rendered, limit)

    def render_line(self, event_dict: EventDict) -> bytes:
        """`render` as UTF-8 bytes with the line's ``\\n``: the same line, for a sink
        that writes bytes (no decode here and encode again in the stream)."""
        try:
            data = orjson.dumps(event_dict, default=self._default, option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:
            return (self.render(event_dict) + "\n").encode()
        limit = self._max_bytes
        # The newline is not part of the line LOG_MAX_LINE_BYTES bounds.
        if limit is None or len(data) - 1 <= limit:
            return data
        return (self._fit(event_dict, data[:-1].decode(), limit) + "\n").encode()

    def _render(self, event_dict: EventDict) -> str:
        try:
            # Without OPT_NON_STR_KEYS first: it slows every line down by a third, and
            # the output for string keys is the same.
            return orjson.dumps(event_dict, default=self._default).decode()
        except orjson.JSONEncodeError:
            pass
        try:
            return orjson.dumps(
                event_dict, default=self._default, option=orjson.OPT_NON_STR_KEYS
            ).decode()
        except orjson.JSONEncodeError:
            # Integers beyond 64 bits and the like: fall back to the standard library.
            import json

            return json.dumps(event_dict, default=self._default)

    def _fit(self, event_dict: EventDict, rendered: str, limit: int) -> str:
        """*rendered* shortened to at most *limit* bytes, still one JSON object."""
        size = len(rendered.encode("utf-8", "replace"))
        if size <= limit:
            return rendered
        line = dict(event_dict)
        for _ in range(32):  # each round cuts a traceback or the longest value
            if not _shorten(line, size - limit):
                break
            rendered = self._render(line)
            size = len(rendered.encode("utf-8", "replace"))
            if size <= limit:
                return rendered
        # Nothing left to cut (many small fields): say so rather than write it whole.
        kept = {key: event_dict[key] for key in ("timestamp", "level") if key in event_dict}
        kept["event"] = str(event_dict.get("event", ""))[:256]
        kept["logger"] = event_dict.get("logger")
        kept["truncated"] = f"the line was {size} bytes, above LOG_MAX_LINE_BYTES={limit}"
        return self._render(kept)
