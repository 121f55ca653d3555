"""The Flask adapter as a user types it; checked with ``mypy --strict``, never run."""

from __future__ import annotations

from flask import Flask
from typing_extensions import assert_type

import backend_kit
from backend_kit.flask import BackendKit, extension, init_app
from backend_kit.health import HealthRegistry


class CatalogApp(Flask):
    """An application class of the user's own, with attributes Flask does not have."""

    catalog_name = "catalog"


def create_app() -> CatalogApp:
    # init_app returns the app it was given, typed as the subclass it is.
    app = init_app(CatalogApp("catalog"), settings=backend_kit.load_settings())
    assert_type(app, CatalogApp)
    name: str = app.catalog_name
    del name
    return app


assert_type(init_app(Flask("plain")), Flask)
assert_type(init_app(CatalogApp("catalog"), health=HealthRegistry()), CatalogApp)
state = extension(create_app())
assert_type(state, BackendKit)
assert_type(state.settings, backend_kit.Settings)
assert_type(state.health, HealthRegistry)

init_app(object())  # type: ignore[type-var]
init_app(Flask("x"), settings="production")  # type: ignore[arg-type]
init_app(Flask("x"), backend_kit.load_settings())  # type: ignore[call-arg]  # keyword-only
