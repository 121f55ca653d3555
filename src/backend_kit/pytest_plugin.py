"""pytest plugin shipped with backend_kit (registered through the ``pytest11`` entry point).

It provides two fixtures. ``backend_kit_isolation`` resets everything backend_kit holds
(`backend_kit.testing.reset`) before and after the test. ``backend_kit_retries``: for
the duration of one test, retries never sleep and make at most one attempt (see
`backend_kit.testing.retries`). Mark a test with
``@pytest.mark.backend_kit_retries(attempts=3)`` to allow more attempts.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

__all__ = ["backend_kit_isolation", "backend_kit_retries"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backend_kit_retries(attempts=1): the attempts the backend_kit_retries fixture allows",
    )


@pytest.fixture
def backend_kit_retries(request: pytest.FixtureRequest) -> Iterator[int]:
    """Retries in this test never sleep and stop after the marked number of attempts
    (default 1). Yields that number."""
    # Imported here, not at the top: pytest loads this plugin before coverage and
    # before a project's own conftest, and backend_kit should not be imported that early.
    from backend_kit.testing import retries

    marker = request.node.get_closest_marker("backend_kit_retries")
    attempts = 1
    if marker is not None:
        attempts = marker.kwargs.get("attempts", marker.args[0] if marker.args else 1)
    with retries(attempts=attempts):
        yield attempts


@pytest.fixture
def backend_kit_isolation() -> Iterator[None]:
    """The test starts and ends with nothing of backend_kit configured or remembered:
    `backend_kit.testing.reset` runs before and after it. Make it autouse in a
    ``conftest.py`` to isolate every test (see the testing guide)."""
    from backend_kit.testing import reset

    reset()
    yield
    reset()
