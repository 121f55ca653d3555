"""The redaction fuzz target (fuzz/fuzz_redact.py) runs, and what it once found stays
fixed. ``make fuzz`` runs it under atheris; here its check runs on fixed inputs."""

from __future__ import annotations

import base64
import importlib.util
import random
from pathlib import Path
from types import ModuleType

import pytest

TARGET = Path(__file__).resolve().parent.parent / "fuzz" / "fuzz_redact.py"


def _target() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fuzz_redact", TARGET)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Inputs the fuzzer found (base64, as libFuzzer prints them): a card number followed by a
# short number, "4222000018080006 2".
FOUND = ["AAABUlJSUlJSAAAAAD2AAIA="]


@pytest.mark.parametrize("encoded", FOUND)
def test_inputs_the_fuzzer_found(encoded: str) -> None:
    _target().check(base64.b64decode(encoded))


def test_the_fuzz_check_on_generated_inputs() -> None:
    target = _target()
    rnd = random.Random(20260101)
    shapes = set()
    for _ in range(300):
        data = bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 120)))
        target.check(data)
        shapes.add(target.planted(target.Input(data))[2])
    assert shapes == {"url", "assignment", "json", "header", "card", "settings"}


def test_a_surviving_secret_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check is not vacuous: with a redactor that masks nothing, it fails."""
    from backend_kit._redact import Redactor

    target = _target()
    monkeypatch.setattr(Redactor, "redact_text", lambda self, text: text)
    rnd = random.Random(7)
    for _ in range(20):
        data = bytes(rnd.randrange(256) for _ in range(40))
        with pytest.raises(AssertionError, match="survived"):
            target.check(data)
