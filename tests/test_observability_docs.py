"""The Python examples in the observability pages run as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = ("logging.md", "redaction.md", "sentry.md")
_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _examples() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        for index, code in enumerate(_BLOCK.findall((DOCS / page).read_text(encoding="utf-8"))):
            found.append((f"{page}#{index + 1}", code))
    return found


@pytest.mark.parametrize(("where", "code"), _examples(), ids=[w for w, _ in _examples()])
def test_example_runs(where: str, code: str) -> None:
    namespace: dict[str, object] = {"__name__": f"docs_example_{where}"}
    exec(compile(code, where, "exec"), namespace)  # noqa: S102 - our own documentation
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()
