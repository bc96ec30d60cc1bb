"""The package's layers (docs/architecture.md), checked on the source's imports.

Data flows one way: a module may import modules of its own layer or of lower
layers, never of a higher one (function-level imports included). Only
``_backend.py`` asks which array library an array belongs to.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "tensorfact"

#: lowest first; the key is the first component below ``tensorfact``
LAYERS: dict[str, int] = {
    "_backend": 0,
    "_validation": 0,
    "_kernels": 0,
    "_io": 0,
    "tenalg": 1,
    "formats": 2,
    "tensors": 3,
    "datasets": 4,
    "decomposition": 5,
    "nn": 6,
    "reproduce": 7,
    "cli": 8,
    "__init__": 8,
    "__main__": 8,
    "_testing": 8,
}

#: subpackages written for one array library by design (PyTorch modules), and
#: the test helpers, may name that library's types
LIBRARY_SPECIFIC = {"nn", "_testing"}
MAX_LINES = 700


def _modules() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py"))


def _dotted(path: Path) -> list[str]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return parts


def _imports(path: Path, source: str | None = None) -> list[tuple[list[str], int]]:
    """``(target parts below tensorfact, line)`` of every tensorfact import."""
    tree = ast.parse(path.read_text() if source is None else source, filename=str(path))
    here = _dotted(path)
    package = here if path.name == "__init__.py" else here[:-1]
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                mod = base + (node.module.split(".") if node.module else [])
            elif node.module and node.module.split(".")[0] == "tensorfact":
                mod = node.module.split(".")[1:]
            else:
                continue
            if node.module is None or not mod:
                # "from . import x, y": the names are submodules
                out.extend((mod + [a.name], node.lineno) for a in node.names)
            else:
                out.append((mod, node.lineno))
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "tensorfact":
                    out.append((parts[1:], node.lineno))
    return out


#: ``import tensorfact``: the facade re-exports the layers up to decomposition
FACADE = LAYERS["decomposition"]


def _layer(parts: list[str]) -> int | None:
    """Layer of an import target."""
    if not parts:
        return FACADE
    return LAYERS.get(parts[0])


def _module_layer(parts: list[str]) -> int | None:
    """Layer of a module of the package (the top ``__init__`` is the highest)."""
    return LAYERS["__init__"] if not parts else LAYERS.get(parts[0])


def test_every_module_has_a_layer():
    missing = sorted({_dotted(p)[0] for p in _modules() if _module_layer(_dotted(p)) is None})
    assert missing == [], f"add these to LAYERS and docs/architecture.md: {missing}"


def test_no_import_from_a_lower_layer_to_a_higher_one():
    bad = []
    for path in _modules():
        here = _dotted(path)
        own = _module_layer(here)
        for target, line in _imports(path):
            other = _layer(target)
            if other is not None and own is not None and other > own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports tensorfact."
                           f"{'.'.join(target)} (layer {other} > {own})")
    assert bad == []


def test_the_facade_imports_nothing_above_it():
    bad = [t for t, _ in _imports(ROOT / "__init__.py") if (_layer(t) or 0) > FACADE]
    assert bad == []


def test_nn_and_reproduce_use_only_public_modules():
    bad = []
    for path in _modules():
        here = _dotted(path)
        if not here or here[0] not in ("nn", "reproduce"):
            continue
        for target, line in _imports(path):
            if not target or target[0] == here[0]:
                continue
            if here[0] == "nn" and target[0] not in ("decomposition",):
                continue  # nn builds torch layers on tensors/tenalg/_backend freely
            if any(part.startswith("_") for part in target):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports tensorfact."
                           f"{'.'.join(target)}")
    assert bad == []


def _inspects_array_library(tree: ast.AST) -> list[int]:
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "__module__":
            lines.append(node.lineno)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "isinstance" and len(node.args) == 2):
            for sub in ast.walk(node.args[1]):
                if isinstance(sub, ast.Attribute) and sub.attr in ("ndarray", "Tensor"):
                    lines.append(node.lineno)
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            if any(n.split(".")[0] in ("torch", "cupy") for n in names):
                lines.append(node.lineno)
    return lines


def test_only_backend_asks_which_array_library():
    bad = []
    for path in _modules():
        here = _dotted(path)
        if here and (here[0] in LIBRARY_SPECIFIC or here == ["_backend"]):
            continue
        for line in _inspects_array_library(ast.parse(path.read_text())):
            bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert bad == []


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_size(path):
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.relative_to(ROOT)} has {n} lines; split it by responsibility"


def test_the_checker_sees_a_violation():
    # the checker itself must find an upward import and a library test
    src = "from ..decomposition import cp_als\nimport torch\nx = type(a).__module__\n"
    assert len(_inspects_array_library(ast.parse(src))) == 2
    targets = _imports(ROOT / "tenalg" / "_probe.py", src)
    assert (["decomposition"], 1) in targets
    assert _layer(["decomposition"]) > _layer(["tenalg"])
