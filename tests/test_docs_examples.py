"""Every Python example in docs/ (subfolders included) runs, page by page, each page as
one session; a test function an example defines without arguments is run too.

How a page marks its examples:

- ```python          runs, in the page's namespace, in order.
- ```python title="app.py"
                     runs too, and is first saved as that file in the page's project
                     directory (the current directory, on ``sys.path``), so later
                     examples can import it as the reader's own project would.
- ```py              is shown, never run: a file that only works inside a project the
                     page does not build (a Django ``settings.py``), or a fragment.
"""

from __future__ import annotations

import inspect
import re
import sys
import textwrap
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.rglob("*.md"))

_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```python(?P<info>[ \t][^\n]*)?\n(?P<code>.*?)^(?P=indent)```[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
_TITLE = re.compile(r"""\btitle=(["'])(?P<title>[^"']+)\1""")


def examples(text: str) -> list[tuple[str | None, str]]:
    """The ``python`` blocks of a page: (file name from ``title=``, or None; source)."""
    found = []
    for match in _FENCE.finditer(text):
        title = _TITLE.search(match.group("info") or "")
        found.append((title.group("title") if title else None, textwrap.dedent(match["code"])))
    return found


def _page_id(page: Path) -> str:
    return page.relative_to(DOCS).with_suffix("").as_posix()


@pytest.mark.parametrize("page", PAGES, ids=[_page_id(page) for page in PAGES])
def test_page_examples_run(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    monkeypatch.syspath_prepend(str(project))
    modules_before = set(sys.modules)
    namespace: dict[str, object] = {"__name__": f"docs_{page.stem.replace('-', '_')}"}
    try:
        for title, source in examples(page.read_text(encoding="utf-8")):
            if title is not None:
                target = project / title
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text(source, encoding="utf-8")
            filename = str(page) if title is None else f"{page} ({title})"
            exec(compile(source, filename, "exec", dont_inherit=True), namespace)  # noqa: S102
        for name, value in list(namespace.items()):
            # Examples of pytest tests that take fixtures (Django's `client`) only show usage.
            if (
                name.startswith("test_")
                and callable(value)
                and not inspect.signature(value).parameters
            ):
                value()
    finally:
        # The page's own modules (app, settings, ...) must not shadow another page's.
        for name in set(sys.modules) - modules_before:
            origin = getattr(sys.modules[name], "__file__", None) or ""
            if origin.startswith(str(project)):
                del sys.modules[name]


def test_the_fence_conventions_are_recognised() -> None:
    page = textwrap.dedent(
        """\
        ```python
        a = 1
        ```

        ```python title="pkg/app.py"
        b = 2
        ```

        ```py
        not run
        ```

        !!! note
            ```python
            c = 3
            ```
        """
    )
    assert examples(page) == [(None, "a = 1\n"), ("pkg/app.py", "b = 2\n"), (None, "c = 3\n")]
