"""Regenerate the variable table of docs/reference/configuration.md from the settings model.

    python docs/gen_config_reference.py           # rewrite the page (or: make docs-reference)
    python docs/gen_config_reference.py --check   # exit 1 when the page is out of date

The table is exactly what ``backend-kit config env --format markdown`` prints for
``backend_kit.Settings``. Everything above the marker line is written by hand and kept.
"""

from __future__ import annotations

import sys
from pathlib import Path

from backend_kit import Settings
from backend_kit._sources import describe_variables
from backend_kit.cli import reference_markdown

PAGE = Path(__file__).resolve().parent / "reference" / "configuration.md"
MARKER = (
    "<!-- Generated from backend_kit.Settings by docs/gen_config_reference.py "
    "(make docs-reference); edit above this line only. -->"
)


def render(page: str) -> str:
    """*page* with everything after the marker replaced by the current table."""
    intro, found, _ = page.partition(MARKER)
    if not found:
        raise SystemExit(f"{PAGE}: put this line back under the hand-written intro:\n{MARKER}")
    return f"{intro}{MARKER}\n\n{reference_markdown(describe_variables(Settings))}"


def main(argv: list[str]) -> int:
    current = PAGE.read_text(encoding="utf-8")
    expected = render(current)
    if "--check" in argv:
        if current != expected:
            print(f"{PAGE} is out of date: run `make docs-reference`", file=sys.stderr)
            return 1
        return 0
    if current != expected:
        PAGE.write_text(expected, encoding="utf-8")
        print(f"updated {PAGE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
