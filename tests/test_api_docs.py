"""Every public name has an entry in the API reference of the docs site."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
MODULES = ["tensorfact", "tensorfact.formats", "tensorfact.datasets", "tensorfact.nn"]
NOT_OBJECTS = {"__version__", "datasets", "decomposition", "formats", "tenalg", "tensors"}


def _documented() -> set[int]:
    """Identities of the objects that some ``::: dotted.name`` entry renders."""
    found = set()
    for page in DOCS.glob("*.md"):
        for target in re.findall(r"^::: ([\w.]+)", page.read_text(encoding="utf-8"), re.M):
            mod, _, name = target.rpartition(".")
            found.add(id(getattr(importlib.import_module(mod), name)))
    return found


@pytest.mark.parametrize("module", MODULES)
def test_every_public_name_has_an_api_entry(module):
    if module == "tensorfact.nn":
        pytest.importorskip("torch")
    if module == "tensorfact.formats":
        pytest.importorskip("dask")
    mod = importlib.import_module(module)
    documented = _documented()
    missing = [n for n in mod.__all__
               if n not in NOT_OBJECTS and id(getattr(mod, n)) not in documented]
    assert missing == [], f"add '::: {module}.<name>' entries to docs/api.md for {missing}"
