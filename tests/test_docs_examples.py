"""Every Python example in docs/ runs, page by page, each page as one session; a test
function an example defines without arguments is run too."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=[page.stem for page in PAGES])
def test_page_examples_run(page: Path) -> None:
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem}"}
    for source in blocks:
        exec(compile(source, str(page), "exec", dont_inherit=True), namespace)  # noqa: S102
    for name, value in list(namespace.items()):
        # Examples of pytest tests that take fixtures (Django's `client`) only show usage.
        if name.startswith("test_") and callable(value) and not inspect.signature(value).parameters:
            value()
