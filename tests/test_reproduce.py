"""The SPALS reproduction (``tensorfact reproduce spals``) at a tiny scale, and its protocol."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

import tensorfact as tf
from tensorfact.cli import main
from tensorfact.datasets import planted_sparse_cp
from tensorfact.reproduce import SCALES, run_spals_reproduction
from tensorfact.reproduce._problems import dense_problem
from tensorfact.reproduce._report import format_tables, make_checks
from tensorfact.reproduce._runs import Protocol, Tracker

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One tiny run (dense, sparse, scaling) from an empty working directory."""
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("reproduce")
    cwd, out = root / "cwd", root / "out"
    cwd.mkdir()
    mp = pytest.MonkeyPatch()
    mp.chdir(cwd)
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            res = run_spals_reproduction("tiny", out, progress=False)
    finally:
        mp.undo()
    data = json.loads((out / "spals_tiny.json").read_text())
    return dict(root=root, cwd=cwd, out=out, res=res, data=data, stdout=buf.getvalue())


def test_writes_only_into_out(tiny):
    assert sorted(p.name for p in tiny["root"].iterdir()) == ["cwd", "out"]
    assert list(tiny["cwd"].iterdir()) == []
    names = {p.name for p in tiny["out"].iterdir()}
    assert names == {"spals_tiny.json", "spals_tiny_models.npz", "spals_error_vs_time_tiny.png",
                     "spals_scaling_tiny.png"}
    for name in names:
        if name.endswith(".png"):
            assert (tiny["out"] / name).read_bytes()[:8] == PNG


def test_header_tables_and_checks_are_printed(tiny):
    out, data = tiny["stdout"], tiny["data"]
    cfg = SCALES["tiny"]
    for line in data["header"]:
        assert line in out
    head = "\n".join(data["header"])
    assert f"{cfg.n}x{cfg.n}x{cfg.n}, rank {cfg.rank}" in head
    assert f"{cfg.seeds} shared seed(s)" in head and "threads: 1" in head
    assert data["machine"]["cpu_model"] in head
    assert "Dense 24x24x24, rank 3, sigma = 0.1: noise floor" in out
    assert "| exact ALS | shared random x2 |" in out and "| SPALS alpha=0.5 | own (random) |" in out
    assert "| sparse ALS | own (svd) |" in out
    assert f"SPALS alpha = {cfg.scaling_alpha:g}" in out  # the scaling table names its alpha
    assert "acceptance" not in out and "acceptance" not in json.dumps(data)
    assert data["checks"]
    for c in data["checks"]:
        assert c["verdict"] in ("PASS", "FAIL")
        assert f"check {c['verdict']}: {c['name']}: target {c['target']}, measured " \
               f"{c['value_text']}" in out


def test_json_holds_every_printed_number(tiny):
    """The tables are rendered from the JSON alone, so re-rendering the file gives them back."""
    data = tiny["data"]
    assert format_tables(data) == data["tables_markdown"]
    assert data["tables_markdown"] in tiny["stdout"]
    assert make_checks(data, data["config"]["targets"]) == data["checks"]


def test_runs_follow_the_protocol(tiny):
    data = tiny["data"]
    cfg = SCALES["tiny"]
    dense = data["experiments"]["dense"]
    assert [b["sigma"] for b in dense] == list(cfg.sigmas)
    for block in [*dense, data["experiments"]["sparse"]]:
        runs = block["runs"]
        # every method from every shared start plus its own default start
        assert len(runs) == (1 + len(cfg.alphas)) * (cfg.seeds + 1)
        shared = [r for r in runs if r["init"].startswith("shared")]
        assert {r["seed"] for r in shared} == set(range(cfg.seeds))
        for r in runs:
            assert 1 <= r["n_iter"] <= cfg.max_iter
            assert len(r["sweep_times"]) == r["n_iter"]
            assert r["time_per_iter"] > 0 and r["total_time"] >= r["setup_time"] >= 0
            assert r["curve_time"] == sorted(r["curve_time"])
            # the trace ends at the last sweep; ALS's own error is exact, and SPALS's traced
            # error is an exact residual: both end at the final error of the returned model
            assert r["curve_iter"][-1] == r["n_iter"]
            assert r["curve_error"][-1] == pytest.approx(r["final_error"], rel=1e-9)
        assert block["best_final_error"] == min(r["final_error"] for r in runs)
        assert 0 < block["noise_floor"] < 0.2


def _check_models(X, runs, models):
    dense = X.to_dense() if hasattr(X, "to_dense") else X
    normX = float(np.linalg.norm(dense))
    for r in runs:
        key = r["model"]
        factors = [models[f"{key}__factor_{m}"] for m in range(dense.ndim)]
        cp = tf.CPTensor(factors, weights=models[f"{key}__weights"])
        err = float(np.linalg.norm(dense - cp.to_dense())) / normX
        assert r["final_error"] == pytest.approx(err, rel=1e-9, abs=1e-12), key


def test_final_errors_match_the_saved_models(tiny):
    cfg = SCALES["tiny"]
    data, seed = tiny["data"], tiny["data"]["seed"]
    with np.load(tiny["out"] / "spals_tiny_models.npz", allow_pickle=False) as f:
        models = dict(f)
    for k, block in enumerate(data["experiments"]["dense"]):
        X, truth = dense_problem(cfg.n, cfg.rank, block["sigma"], (seed, 1, k))
        _check_models(X, block["runs"], models)
        floor = np.linalg.norm(X - truth.to_dense()) / np.linalg.norm(X)
        assert block["noise_floor"] == pytest.approx(floor, rel=1e-9)
    X, _ = planted_sparse_cp(cfg.sparse_shape, cfg.rank, cfg.sparse_nnz, noise=cfg.sparse_noise,
                             skew=cfg.sparse_skew, exact=True,
                             rng=np.random.default_rng((seed, 5)))
    _check_models(X, data["experiments"]["sparse"]["runs"], models)


def test_dense_problem_noise_level():
    X, truth = dense_problem(30, 2, 0.3, 1)
    T = truth.to_dense()
    assert np.linalg.norm(X - T) / np.linalg.norm(T) == pytest.approx(0.3, rel=0.05)
    Y, _ = dense_problem(30, 2, 0.3, 1, dtype=np.float32)
    assert Y.dtype == np.float32 and np.allclose(Y, X, rtol=1e-4, atol=1e-4)


def test_tracker_convergence_test_and_time_subtraction():
    p = Protocol(rtol=1e-3, patience=2, max_iter=100)
    t = Tracker(p, None)
    stops = [t(i, None, e) for i, e in enumerate([1.0, 0.5, 0.4, 0.39999, 0.39998, 0.3], 1)]
    # sweep 5: best 0.39998 against 0.4 two sweeps before: a relative gain below 1e-3
    assert stops == [False, False, False, False, True, False]
    t.spent = [0.5, 0.25, 0.0]
    assert t.times((1.0, 2.5, 3.0)) == [1.0, 2.0, 2.25]
    # an exact error every 2 sweeps: the test runs on the evaluated sweeps only
    calls = []
    t2 = Tracker(p, lambda cp: calls.append(cp) or 1.0, every=2)
    assert [t2(i, i, 9.0) for i in range(1, 6)] == [False, False, False, True, False]
    assert calls == [1, 2, 4] and t2.iters == [1, 2, 4]


def test_checks_treat_never_as_infinitely_late():
    from tensorfact.reproduce._report import _check, _time_ratio

    assert _time_ratio(None, 1.0) == math.inf and _time_ratio(1.0, None) == 0.0
    assert _time_ratio(None, None) is None
    c = _check("x", math.inf, ">=", 1.0)
    assert c["verdict"] == "PASS" and c["value"] is None and c["value_text"] == "inf"
    c = _check("x", None, ">=", 1.0)
    assert c["verdict"] == "FAIL" and c["value_text"].startswith("undefined")
    assert _check("x", 1.2, "<=", 1.1)["verdict"] == "FAIL"


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
    data = json.loads((tmp_path / "spals_tiny.json").read_text())
    assert set(data["experiments"]) == {"dense"}
    assert "Dense 24x24x24" in capsys.readouterr().out


def test_amazon_path_on_a_tiny_store(tmp_path, capsys):
    pytest.importorskip("dask")
    pytest.importorskip("matplotlib")
    if "planted_sparse_store" not in tf.datasets.__all__:
        pytest.skip("planted_sparse_store not available")
    res = run_spals_reproduction("tiny", tmp_path, progress=False, experiments=("amazon",))
    am = res["experiments"]["amazon"]
    assert am["store"].startswith(str(tmp_path))
    als, sp = am["runs"]
    assert als["bytes_read_per_iter"] > sp["bytes_read_per_iter"] > 0
    assert als["peak_rss_mib"] > 0 and 0 < sp["final_error"] < 1
    out = capsys.readouterr().out
    assert "Amazon-shaped sparse 300x200x100" in out and "MiB read/iter" in out
    again = run_spals_reproduction("tiny", tmp_path, progress=False, experiments=("amazon",))
    assert any("reused the store" in n for n in again["notes"])


def test_bad_scale_and_experiment(tmp_path):
    with pytest.raises(ValueError, match="scale"):
        run_spals_reproduction("huge", tmp_path)
    with pytest.raises(ValueError, match="experiments"):
        run_spals_reproduction("tiny", tmp_path, experiments=("dense", "nope"))
    assert {"quick", "default", "paper", "amazon"} <= set(SCALES)
    assert SCALES["paper"].n == 1000 and SCALES["paper"].sigmas == (0.01, 0.1, 1.0)
    assert SCALES["amazon"].amazon_nnz == 2 * 10**8


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


def test_seeds_option_sets_the_number_of_shared_starts(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    from tensorfact.cli import main

    assert main(["reproduce", "spals", "--scale", "tiny", "--out", str(tmp_path),
                 "--no-progress", "--seeds", "1"]) == 0
    data = json.loads((tmp_path / "spals_tiny.json").read_text())
    for exp in data["experiments"]["dense"]:  # one per sigma
        inits = [r["init"] for r in exp["runs"] if r["method"] == "exact ALS"]
        assert inits == ["shared random", "own (svd)"]  # the default is 2 shared starts
    with pytest.raises(ValueError, match="seeds"):
        run_spals_reproduction("tiny", tmp_path, progress=False, seeds=-1)
