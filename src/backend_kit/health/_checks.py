"""What a health check is, what one run of it produced, and the registry that holds them."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, overload

__all__ = [
    "CheckResult",
    "CheckStatus",
    "ComponentType",
    "HealthCheck",
    "HealthRegistry",
    "Observation",
]

#: The kind of component a check looks at, reported as ``componentType``.
ComponentType = Literal["datastore", "cache", "http", "system", "custom"]
#: The status of one check or of a whole probe, as the health+json format spells it.
CheckStatus = Literal["pass", "warn", "fail"]

_COMPONENT_TYPES: frozenset[str] = frozenset({"datastore", "cache", "http", "system", "custom"})
# The report keys checks by ``component:measurement``; a colon in either part would
# make the key ambiguous, and whitespace makes it awkward to query.
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Observation:
    """What a passing check measured, reported as ``observedValue`` and ``observedUnit``.

    Examples:
        >>> Observation(12.5, "ms")
        Observation(value=12.5, unit='ms')
    """

    value: Any
    unit: str | None = None


#: What a check's ``run`` may return: nothing, a bare value, a (value, unit) pair, or
#: an `Observation`. Either plain or as the result of a coroutine.
RunResult = Observation | tuple[Any, str] | float | int | str | bool | None
CheckFunction = Callable[[], RunResult] | Callable[[], Awaitable[RunResult]]


@dataclass(frozen=True, eq=False)
class HealthCheck:
    """One check of one dependency.

    *run* is a plain or ``async`` function without arguments. It passes by returning
    (optionally an `Observation`, a bare value or a ``(value, unit)`` pair) and fails by
    raising. *timeout* bounds how long a probe waits for it (``None``: the
    ``HEALTH_CHECK_TIMEOUT`` setting); clients the check opens should use it for their
    own connect and read timeouts, as the built-in checks do. A failing non-critical
    check makes readiness ``warn`` instead of ``fail``.

    Raises `ValueError` for an invalid name, component type or timeout.

    Examples:
        >>> check = HealthCheck("payments", run=lambda: None, component_type="http")
        >>> check.key
        'payments:status'
    """

    name: str
    run: CheckFunction = field(repr=False)
    component_type: ComponentType = "custom"
    critical: bool = True
    timeout: float | None = None
    measurement: str = "status"

    def __post_init__(self) -> None:
        for label, value in (("name", self.name), ("measurement", self.measurement)):
            if not isinstance(value, str) or not _NAME.match(value):
                raise ValueError(
                    f"health check {label} {value!r} is invalid: use letters, digits, "
                    "'_', '-' or '.', for example 'postgresql' or 'responseTime'"
                )
        if self.component_type not in _COMPONENT_TYPES:
            raise ValueError(
                f"health check {self.name!r}: component_type {self.component_type!r} is not "
                f"one of {', '.join(sorted(_COMPONENT_TYPES))}"
            )
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(
                f"health check {self.name!r}: timeout must be a positive number of seconds"
            )
        if not callable(self.run):
            raise ValueError(f"health check {self.name!r}: run must be a function")

    @property
    def key(self) -> str:
        """The key of this check in the report: ``component:measurement``."""
        return f"{self.name}:{self.measurement}"

    @property
    def is_async(self) -> bool:
        """True when *run* is a coroutine function."""
        return inspect.iscoroutinefunction(self.run)


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one run of a check.

    *output* holds the (already redacted) reason of a failure; it is shown only in the
    detailed report. *time* is when the run finished, in ISO 8601 (UTC).
    """

    check: HealthCheck
    status: CheckStatus
    time: str
    duration: float
    observation: Observation | None = None
    output: str | None = None

    @property
    def key(self) -> str:
        return self.check.key


F = TypeVar("F", bound=Callable[..., Any])


class HealthRegistry:
    """The health checks of a service.

    Examples:
        >>> registry = HealthRegistry()
        >>> @registry.check(name="payments", component_type="http", critical=False)
        ... def payments() -> None:
        ...     pass
        >>> [check.key for check in registry]
        ['payments:status']
    """

    def __init__(self, checks: list[HealthCheck] | tuple[HealthCheck, ...] = ()) -> None:
        self._checks: dict[str, HealthCheck] = {}
        for check in checks:
            self.add(check)

    def add(self, check: HealthCheck) -> HealthCheck:
        """Register *check* and return it.

        Raises `ValueError` when a check with the same key is already registered.
        """
        if not isinstance(check, HealthCheck):
            raise TypeError(f"expected a HealthCheck, got {type(check).__name__}")
        if check.key in self._checks:
            raise ValueError(
                f"a health check with key {check.key!r} is already registered; "
                "give the new one another name"
            )
        self._checks[check.key] = check
        return check

    @overload
    def check(self, function: F, /) -> F: ...
    @overload
    def check(
        self,
        function: None = None,
        /,
        *,
        name: str | None = None,
        component_type: ComponentType = "custom",
        critical: bool = True,
        timeout: float | None = None,
        measurement: str = "status",
    ) -> Callable[[F], F]: ...
    def check(
        self,
        function: F | None = None,
        /,
        *,
        name: str | None = None,
        component_type: ComponentType = "custom",
        critical: bool = True,
        timeout: float | None = None,
        measurement: str = "status",
    ) -> F | Callable[[F], F]:
        """Register a plain or ``async`` function as a check (a decorator); the function
        is returned unchanged. Its name is the function's name unless *name* is given."""

        def register(fn: F) -> F:
            self.add(
                HealthCheck(
                    name or fn.__name__,
                    run=fn,
                    component_type=component_type,
                    critical=critical,
                    timeout=timeout,
                    measurement=measurement,
                )
            )
            return fn

        return register(function) if function is not None else register

    def remove(self, key: str) -> None:
        """Forget the check registered under *key* (``component:measurement``)."""
        self._checks.pop(key, None)

    def __iter__(self) -> Iterator[HealthCheck]:
        return iter(list(self._checks.values()))

    def __len__(self) -> int:
        return len(self._checks)

    def __repr__(self) -> str:
        return f"HealthRegistry({', '.join(self._checks)})"
