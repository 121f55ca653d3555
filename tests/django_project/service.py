"""The project's own settings class."""

from __future__ import annotations

from backend_kit import Settings


class ServiceSettings(Settings):
    greeting: str = "hello"
