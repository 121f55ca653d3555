"""W3C trace context: the ``traceparent`` and ``tracestate`` headers, in and out.

Parsing is by position and fixed-size character checks, never a backtracking pattern,
and every header is length-capped before it is looked at. An invalid ``traceparent``
is ignored (a new trace starts); an invalid ``tracestate`` is dropped whole, as the
W3C recommendation says.

OpenTelemetry is never imported here: when the application has imported it (its SDK
and an instrumentation are running), `otel_span_ids` finds it in ``sys.modules`` and
its active span's ids win over backend_kit's own, so one request has one trace.
"""

from __future__ import annotations

import os
import re
import sys
from random import getrandbits as _random_bits
from typing import NamedTuple

__all__ = [
    "SPAN_ID_KEY",
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "TRACE_ID_KEY",
    "TraceContext",
    "child_traceparent",
    "new_span_id",
    "new_trace",
    "otel_span_ids",
    "parse_traceparent",
    "parse_tracestate",
]

#: Log-line keys, as named by OpenTelemetry's log data model.
TRACE_ID_KEY = "trace_id"
SPAN_ID_KEY = "span_id"

TRACEPARENT_HEADER = "traceparent"
TRACESTATE_HEADER = "tracestate"

# A version-00 traceparent is exactly 55 characters; later versions may append fields
# but we only read the first 55, so a longer header is cut before anything else.
_TRACEPARENT_MAX = 256
# The W3C recommendation: at most 32 list members, and 512 characters is what a
# vendor must at least propagate; past that the header is dropped rather than cut.
_TRACESTATE_MAX = 512
_TRACESTATE_MAX_MEMBERS = 32

_HEX = frozenset("0123456789abcdef")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16

# Bounded quantifiers, one character class each side of a single literal: no nested or
# overlapping repetition, so matching is linear in the (already capped) member length.
_TRACESTATE_KEY = re.compile(
    r"[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13}"
)
_TRACESTATE_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}")


class TraceContext(NamedTuple):
    """The trace a request belongs to: its ids as lowercase hex, the W3C flags and the
    vendors' ``tracestate`` (``""`` when there is none)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    flags: str
    tracestate: str

    @property
    def sampled(self) -> bool:
        """True when the caller marked the trace as sampled (flag bit 0)."""
        return int(self.flags, 16) & 1 == 1


def new_span_id() -> str:
    """A fresh random span id: 16 lowercase hex digits, never all zeros."""
    # An id needs to be unique, not secret: the module's generator (reseeded in a forked
    # child, as OpenTelemetry's id generator relies on too) costs no system call.
    span_id = _random_bits(64)
    return f"{span_id:016x}" if span_id else new_span_id()


def _new_trace_id() -> str:
    trace_id = os.urandom(16).hex()
    return trace_id if trace_id != _ZERO_TRACE else _new_trace_id()


def _is_hex(value: str) -> bool:
    return all(character in _HEX for character in value)


def parse_traceparent(value: object) -> tuple[str, str, str] | None:
    """``(trace_id, parent_span_id, flags)`` from a W3C ``traceparent`` header, or
    ``None`` when it is missing or invalid (wrong length, upper-case or non-hex digits,
    version ``ff``, all-zero ids, a version-00 header with trailing data).

    Examples:
        >>> parse_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', '01')
        >>> parse_traceparent("00-xyz") is None
        True
    """
    if not isinstance(value, str) or len(value) > _TRACEPARENT_MAX:
        return None
    value = value.strip(" \t")
    if len(value) < 55:
        return None
    version, trace_id, span_id, flags = value[0:2], value[3:35], value[36:52], value[53:55]
    if value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not (_is_hex(version) and _is_hex(trace_id) and _is_hex(span_id) and _is_hex(flags)):
        return None
    if version == "ff" or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    # Version 00 is exactly 55 characters; a later version may append "-..." fields.
    if len(value) > 55 and (version == "00" or value[55] != "-"):
        return None
    return trace_id, span_id, flags


def parse_tracestate(value: object) -> str:
    """The ``tracestate`` header normalised (empty members removed), or ``""`` when it
    is missing, longer than 512 characters, has more than 32 members, a malformed or
    duplicated key, or a malformed value: an invalid ``tracestate`` is dropped whole.

    Examples:
        >>> parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE")
        'rojo=00f067aa0ba902b7,congo=t61rcWkgMzE'
        >>> parse_tracestate("no spaces in keys=1")
        ''
    """
    if not isinstance(value, str) or not value or len(value) > _TRACESTATE_MAX:
        return ""
    members: list[str] = []
    keys: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, equals, member_value = member.partition("=")
        if (
            not equals
            or _TRACESTATE_KEY.fullmatch(key) is None
            or not member_value
            or member_value[-1] == " "
            or _TRACESTATE_VALUE.fullmatch(member_value) is None
            or key in keys
        ):
            return ""
        keys.add(key)
        members.append(member)
        if len(members) > _TRACESTATE_MAX_MEMBERS:
            return ""
    return ",".join(members)


def new_trace(traceparent: object = None, tracestate: object = None) -> TraceContext:
    """The trace of a request that arrived with these headers: the caller's trace
    continued with a new span id when *traceparent* is valid, else a new trace (with
    the caller's *tracestate* dropped, since it described a trace we do not continue).
    """
    parsed = parse_traceparent(traceparent) if traceparent else None
    if parsed is None:
        return TraceContext(_new_trace_id(), new_span_id(), None, "00", "")
    trace_id, parent_span_id, flags = parsed
    return TraceContext(
        trace_id, new_span_id(), parent_span_id, flags, parse_tracestate(tracestate)
    )


def child_traceparent(trace: TraceContext) -> str:
    """A ``traceparent`` for an outbound call made inside *trace*: the same trace id and
    flags, and a new span id for the call. When an OpenTelemetry span is active, its
    trace is the one continued."""
    # One dict lookup when the application never imported OpenTelemetry.
    ids = otel_span_ids() if "opentelemetry.trace" in sys.modules else None
    trace_id, flags = (ids[0], ids[2]) if ids is not None else (trace.trace_id, trace.flags)
    span_id = _random_bits(64)
    if not span_id:  # all zeros is not a valid span id
        return child_traceparent(trace)
    return f"00-{trace_id}-{span_id:016x}-{flags}"


def otel_span_ids() -> tuple[str, str, str] | None:
    """``(trace_id, span_id, flags)`` of the active OpenTelemetry span, or ``None`` when
    OpenTelemetry was never imported by the application or no valid span is active."""
    otel_trace = sys.modules.get("opentelemetry.trace")
    if otel_trace is None:
        return None
    try:
        span_context = otel_trace.get_current_span().get_span_context()
        if not span_context.is_valid:
            return None
        return (
            format(span_context.trace_id, "032x"),
            format(span_context.span_id, "016x"),
            format(int(span_context.trace_flags), "02x"),
        )
    except Exception:
        # A half-initialised or unexpected OpenTelemetry must not break a log line.
        return None
