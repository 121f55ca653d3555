"""Sample outputs shown in the docs are what the code really prints: each is produced
again here, in a clean process, from the page's own example code, and compared."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def _block(text: str, language: str, after: str) -> str:
    """The first ```language block that follows the text *after*."""
    start = text.index(after)
    match = re.compile(rf"^```{language}[^\n]*\n(.*?)^```$", re.DOTALL | re.MULTILINE).search(
        text, start
    )
    assert match is not None, f"no {language} block after {after!r}"
    return match.group(1)


def _run(cwd: Path, args: list[str], **variables: str) -> str:
    """Run Python in *cwd* with only *variables* from the environment (and PATH/HOME)."""
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    env.update(variables)
    result = subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def test_the_order_of_problems_on_the_settings_page(tmp_path: Path) -> None:
    page = _page("settings.md")
    package = tmp_path / "shop"
    package.mkdir()
    (package / "__init__.py").write_text("")
    code = _block(page, "python", "## Your own fields")
    (package / "settings.py").write_text(code.split("\nshop = ")[0])  # the class only
    (tmp_path / ".env").write_text("SHOP_SMTP__PORT=twenty-five\n")
    printed = _run(
        tmp_path,
        [
            "-c",
            "import backend_kit\nfrom shop.settings import ShopSettings\n"
            "try:\n    ShopSettings()\nexcept backend_kit.ConfigError as error:\n"
            "    print(error)\n",
        ],
        SHOP_LOG_LEVEL="chatty",
        SHOP_SMTP__PASSWORD_FILE="/etc/shop/smtp-password",
    )
    assert printed == _block(page, "text", "## When loading fails")


def test_the_logger_name_on_the_logging_page(tmp_path: Path) -> None:
    page = _page("logging.md")
    (tmp_path / "billing").mkdir()
    (tmp_path / "billing" / "__init__.py").write_text("")
    (tmp_path / "billing" / "invoices.py").write_text(_block(page, "python", "## Minimal use"))
    shown = json.loads(_block(page, "json", "## Minimal use"))
    variables = {"LOG_FORMAT": "json", "SERVICE_NAME": "billing"}

    imported = json.loads(_run(tmp_path, ["-c", "import billing.invoices"], **variables))
    assert imported.keys() == shown.keys()
    del imported["timestamp"], shown["timestamp"]
    assert imported == shown
    assert shown["logger"] == "billing.invoices"

    run_as_main = json.loads(_run(tmp_path, ["-m", "billing.invoices"], **variables))
    assert run_as_main["logger"] == "__main__"
    assert '`"logger":"__main__"`' in page


def test_the_cache_info_figures_on_the_caching_page(tmp_path: Path) -> None:
    code = _block(_page("caching.md"), "python", "## Minimal use")
    comments = re.findall(r"^print\(.*\)  # (.*)$", code, re.MULTILINE)
    assert comments == ["CacheInfo(hits=1, misses=1, loads=1, errors=0, fallbacks=0, mismatches=0)"]
    (tmp_path / "example.py").write_text(code)
    assert _run(tmp_path, ["example.py"]).splitlines() == comments
