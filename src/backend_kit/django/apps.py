"""The Django app: ``INSTALLED_APPS += ["backend_kit.django"]``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["BackendKitConfig"]


class BackendKitConfig(AppConfig):
    """Loads the settings and configures logging and Sentry once, when Django starts.

    The settings class comes from the Django setting ``BACKEND_KIT_SETTINGS``
    (``"package.module:ClassName"``, default ``backend_kit.Settings``); settings already
    passed to `backend_kit.configure` from ``settings.py`` are reused when they are of
    that class.
    """

    name = "backend_kit.django"
    label = "backend_kit"
    verbose_name = "backend_kit"
    default = True

    def ready(self) -> None:
        from django.db.backends.signals import connection_created

        from ._state import setup

        setup()
        connection_created.connect(_bound_reads, dispatch_uid="backend_kit.read_timeout")


def _bound_reads(sender: object, connection: object, **kwargs: object) -> None:
    from ._deadline import install_read_timeout

    install_read_timeout(connection)
