"""The Python examples in README.md run as written, in order, as one session."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_examples_run(monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)
    assert len(blocks) >= 2
    monkeypatch.setenv("ORDERS_SERVICE_NAME", "orders")
    namespace: dict[str, object] = {"__name__": "readme_example"}
    for source in blocks:
        code = compile(source, str(README), "exec", dont_inherit=True)
        exec(code, namespace)  # noqa: S102 - our own README
