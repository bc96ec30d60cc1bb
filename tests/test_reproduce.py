"""Smoke test of the SPALS reproduction (``tensorfact reproduce spals``) at a tiny scale."""

from __future__ import annotations

import json

import pytest

from tensorfact.cli import main
from tensorfact.reproduce import SCALES, run_spals_reproduction


def test_tiny_reproduction_writes_table_json_png(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    res = run_spals_reproduction("tiny", tmp_path, progress=False)
    out = capsys.readouterr().out
    assert "| SPALS alpha=" in out and "| ALS (tensorfact)" in out and "sparse ALS" in out
    data = json.loads((tmp_path / "spals_tiny.json").read_text())
    methods = {r["method"] for r in data["rows"] if "method" in r}
    assert {"ALS (tensorfact)", "sparse ALS (tensorfact)"} <= methods
    assert any(m.startswith("SPALS") for m in methods)
    for r in data["rows"]:
        if r["experiment"] != "scaling":
            assert r["time_per_iter"] > 0 and 0 <= r["rel_error"] <= 1.5
    assert {"dense", "sparse", "scaling"} <= set(data["acceptance"])
    for p in res["plots"]:  # file names, relative to the output folder
        with open(tmp_path / p, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert len(res["plots"]) == 2


def test_cli_dense_only(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    import tensorfact.reproduce.spals as rs

    calls = {}
    real = rs.run_spals_reproduction

    def fake(scale, out, **kw):
        calls["scale"] = scale
        return real(scale, out, experiments=("dense",), **kw)

    monkeypatch.setattr(rs, "run_spals_reproduction", fake)
    assert main(["reproduce", "spals", "--scale", "tiny", "--out", str(tmp_path),
                 "--no-progress"]) == 0
    assert calls["scale"] == "tiny"
    assert (tmp_path / "spals_tiny.json").exists()
    assert "Dense" in capsys.readouterr().out


def test_bad_scale(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        run_spals_reproduction("huge", tmp_path)
    assert {"quick", "default", "paper"} <= set(SCALES)


def test_reproduction_uses_public_api_only():
    """The reproduce package imports tensorfact names that are in an ``__all__`` only."""
    import ast
    import importlib
    from pathlib import Path

    import tensorfact
    import tensorfact.reproduce as pkg

    for path in Path(pkg.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and \
                    node.module.startswith("tensorfact"):
                assert not any(part.startswith("_") for part in node.module.split(".")), \
                    (path.name, node.module)
                mod = importlib.import_module(node.module)
                for alias in node.names:
                    assert alias.name in mod.__all__, (path.name, node.module, alias.name)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("tensorfact"):
                        assert alias.name == "tensorfact", (path.name, alias.name)
            elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and \
                    node.value.id == "tf":
                assert node.attr in tensorfact.__all__, (path.name, node.attr)
