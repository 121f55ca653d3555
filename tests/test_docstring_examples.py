"""The examples in the docstrings, which the API reference shows, run as written."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import backend_kit

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(backend_kit.__path__, "backend_kit.")
    # Importing the Django adapter's URLs and views needs a configured project; its
    # docstrings hold no examples.
    if not name.startswith("backend_kit.django")
)


@pytest.mark.parametrize("name", ["backend_kit", *MODULES])
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in finder.find(module, name):
        runner.run(test)
    results = runner.summarize(verbose=False)
    assert results.failed == 0, f"{results.failed} docstring example(s) of {name} failed (above)"
