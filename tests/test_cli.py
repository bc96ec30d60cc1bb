"""The tensorfact command: cp on .npy/.npz files, --version, errors."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import tensorfact
from tensorfact.cli import main
from tensorfact.datasets import planted_cp


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert tensorfact.__version__ in capsys.readouterr().out


def test_cp_npy_round_trip(tmp_path, capsys):
    X, _ = planted_cp((6, 7, 8), 2, rng=0)
    np.save(tmp_path / "x.npy", X)
    out = tmp_path / "f.npz"
    assert main(["cp", str(tmp_path / "x.npy"), "--rank", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "fit" in text and "ms/iteration" in text
    with np.load(out, allow_pickle=False) as d:
        cp = tensorfact.CPTensor([d[f"factor_{n}"] for n in range(3)], weights=d["weights"])
    assert np.linalg.norm(cp.to_dense() - X) / np.linalg.norm(X) < 1e-6


def test_cp_npz_key_selection(tmp_path, capsys):
    X, _ = planted_cp((5, 6, 7), 1, rng=1)
    np.savez(tmp_path / "d.npz", a=X, b=X)
    with pytest.raises(SystemExit, match="--key"):
        main(["cp", str(tmp_path / "d.npz"), "--rank", "1"])
    assert main(["cp", str(tmp_path / "d.npz"), "--rank", "1", "--key", "b"]) == 0


def test_cp_refuses_pickled_arrays(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(SystemExit, match="pickle"):
        main(["cp", str(tmp_path / "o.npy"), "--rank", "1"])


def test_cp_bad_rank_is_a_clean_error(tmp_path, capsys):
    np.save(tmp_path / "x.npy", np.ones((3, 4, 5)))
    assert main(["cp", str(tmp_path / "x.npy"), "--rank", "0"]) == 2
    assert "rank" in capsys.readouterr().err


def test_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "tensorfact.cli", "--version"],
                         capture_output=True, text=True, check=True)
    assert "tensorfact" in out.stdout


# --------------------------------------------------------------------------- #
# convert + cp on a sparse store
# --------------------------------------------------------------------------- #
@pytest.fixture
def tiny_tns(tmp_path):
    pytest.importorskip("dask")
    from tensorfact.datasets import planted_sparse_cp, write_tns

    X, _ = planted_sparse_cp((12, 10, 8), 2, 300, exact=True, rng=0)
    path = tmp_path / "t.tns.gz"
    write_tns(path, X)
    return X, path


def test_convert_then_cp_on_the_store(tiny_tns, tmp_path, capsys):
    X, path = tiny_tns
    store = tmp_path / "store"
    assert main(["convert", str(path), str(store), "--partition-nnz", "80"]) == 0
    text = capsys.readouterr().out
    assert f"{X.nnz} nonzeros" in text and "partitions" in text
    out = tmp_path / "f.npz"
    assert main(["cp", str(store), "--rank", "2", "--max-iter", "50", "--init", "svd",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "method      als, init svd" in text and "from the store" in text
    with np.load(out, allow_pickle=False) as d:
        cp = tensorfact.CPTensor([d[f"factor_{n}"] for n in range(3)], weights=d["weights"])
    from tensorfact.datasets import read_tns

    dense = read_tns(path).to_dense()  # the shape from the file's largest indices
    assert np.linalg.norm(cp.to_dense() - dense) / np.linalg.norm(dense) < 1e-4
    assert main(["cp", str(store), "--rank", "2", "--method", "spals", "--max-iter", "3"]) == 0
    assert "method      spals, init random" in capsys.readouterr().out


def test_cp_store_on_a_distributed_scheduler(tiny_tns, tmp_path, capsys, dask_client):
    _, path = tiny_tns
    store = tmp_path / "store"
    assert main(["convert", str(path), str(store)]) == 0
    address = dask_client.scheduler.address
    assert main(["cp", str(store), "--rank", "2", "--max-iter", "2",
                 "--scheduler", address]) == 0
    assert "fit" in capsys.readouterr().out


def test_convert_and_cp_errors_are_one_line(tiny_tns, tmp_path, capsys):
    _, path = tiny_tns
    bad = tmp_path / "bad.tns"
    bad.write_text("1 1 1 1.0\n1 1 x 2.0\n")
    assert main(["convert", str(bad), str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "line 2" in err and err.count("\n") == 1
    store = tmp_path / "ok"
    assert main(["convert", str(path), str(store)]) == 0
    assert main(["convert", str(path), str(store)]) == 2  # not empty
    assert "not an empty directory" in capsys.readouterr().err
    (store / "primary-00000-values.npy").write_bytes(b"")
    assert main(["cp", str(store), "--rank", "2"]) == 2
    err = capsys.readouterr().err
    assert "primary-00000-values.npy is truncated" in err and err.count("\n") == 1
    assert main(["convert", str(tmp_path / "none.tns"), str(tmp_path / "s2")]) == 2
    assert "none.tns" in capsys.readouterr().err
    (store / "primary-00000-values.npy").unlink()
    assert main(["cp", str(store), "--rank", "2"]) == 2
    assert "primary-00000-values.npy is missing" in capsys.readouterr().err
    good = tmp_path / "good"
    assert main(["convert", str(path), str(good)]) == 0
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}), \
            pytest.raises(SystemExit, match="cannot connect"):
        main(["cp", str(good), "--rank", "2", "--scheduler", "tcp://127.0.0.1:1"])


def test_help_lists_defaults(capsys):
    for cmd in ("cp", "convert"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert text.count("default") >= 5 if cmd == "cp" else text.count("default") >= 3


# ----------------------------------------------------------------- a CLI that guides
def _npy(tmp_path, name="x.npy", shape=(6, 7, 8)):
    X = np.random.default_rng(0).standard_normal(shape)
    np.save(tmp_path / name, X)
    return tmp_path / name


@pytest.mark.parametrize("content, message", [
    (b"", "is an empty file"),
    (b"garbage, not numpy", "is not a .npy or .npz file"),
])
def test_cp_refuses_files_that_are_not_arrays(tmp_path, content, message):
    p = tmp_path / "bad.npy"
    p.write_bytes(content)
    with pytest.raises(SystemExit, match=message):
        main(["cp", str(p), "--rank", "2"])


def test_cp_refuses_a_directory_that_is_not_a_store(tmp_path):
    with pytest.raises(SystemExit, match="is a directory but not a tensor store"):
        main(["cp", str(tmp_path), "--rank", "2"])


def test_cp_checks_out_before_computing(tmp_path):
    x = _npy(tmp_path)
    with pytest.raises(SystemExit, match="does not exist"):
        main(["cp", str(x), "--rank", "2", "--out", str(tmp_path / "nope" / "f.npz")])
    with pytest.raises(SystemExit, match="is a directory"):
        main(["cp", str(x), "--rank", "2", "--out", str(tmp_path)])
    with pytest.raises(SystemExit, match="must end in .npz"):
        main(["cp", str(x), "--rank", "2", "--out", str(tmp_path / "x.txt")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.npy"]


def test_cp_writes_exactly_the_path_given_with_the_umask(tmp_path):
    import os

    x = _npy(tmp_path)
    out = tmp_path / "factors.npz"
    old = os.umask(0o022)
    try:
        assert main(["cp", str(x), "--rank", "2", "--out", str(out)]) == 0
    finally:
        os.umask(old)
    assert (out.stat().st_mode & 0o777) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["factors.npz", "x.npy"]
    with np.load(out, allow_pickle=False) as f:
        assert sorted(f.keys()) == ["factor_0", "factor_1", "factor_2", "weights"]


def test_cp_says_when_it_did_not_converge_and_warns_on_huge_ranks(tmp_path, capsys):
    x = _npy(tmp_path)
    assert main(["cp", str(x), "--rank", "12", "--max-iter", "2"]) == 0
    out = capsys.readouterr()
    assert "not converged after 2 sweeps" in out.out and "--max-iter" in out.out
    assert "--rank 12 exceeds every dimension" in out.err


def test_cp_on_nan_data_names_a_remedy_the_cli_has(tmp_path):
    X = np.ones((3, 4, 5))
    X[0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", X)
    with pytest.raises(SystemExit, match="contains NaN or Inf values; replace them"):
        main(["cp", str(tmp_path / "nan.npy"), "--rank", "2"])


def test_every_option_has_help_with_its_default(capsys):
    for cmd in (["cp", "--help"], ["compress", "--help"], ["convert", "--help"]):
        with pytest.raises(SystemExit):
            main(cmd)
        text = capsys.readouterr().out
        for opt in ("--max-iter", "--tol", "--seed", "--init") if cmd[0] == "cp" else ():
            assert opt in text
        assert text.count("default") >= 2, cmd
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for name in ("cp", "convert", "reproduce", "compress"):
        assert f"    {name}" in text
