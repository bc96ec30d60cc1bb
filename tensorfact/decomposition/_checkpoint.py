"""Checkpoints of a CP run: saved through the callback, resumed through ``init=``.

`Checkpoint` is a solver callback that writes, every ``every``
iterations, the current `CPTensor`, the iteration number,
the relative error and (optionally) the state of the solver's random
generator to one ``.npz`` file. The file is replaced atomically (written
under a temporary name in the same folder, then renamed), so a run killed
while saving leaves the previous checkpoint intact, and it holds only numeric
arrays and JSON text: it is read back with ``allow_pickle=False``.
"""

from __future__ import annotations

import json
import numbers
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _backend as B
from .._io import atomic_write
from ..tensors.cp import CPTensor

__all__ = ["Checkpoint", "CheckpointState"]

_FORMAT = "tensorfact.Checkpoint"
_VERSION = 1
#: bit generators whose state is restored (NumPy's own; their names in the state)
_BIT_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


@dataclass(frozen=True)
class CheckpointState:
    """What `Checkpoint.load` returns.

    Attributes
    ----------
    cp : CPTensor
        The model at the saved iteration (pass it as ``init=``).
    iteration : int
        Iterations completed when it was saved (counted over resumed runs
        when the checkpoint was given ``start=``).
    rel_error : float
        The solver's relative error at that iteration.
    rng : numpy.random.Generator or None
        A generator in the state the solver's generator had at that
        iteration (pass it as ``rng=``), or ``None`` when none was saved.
    """

    cp: CPTensor
    iteration: int
    rel_error: float
    rng: np.random.Generator | None


class Checkpoint:
    """A solver callback that saves the run every ``every`` iterations.

    Pass it as ``callback=`` to `tensorfact.cp_als` or
    `tensorfact.spals`. After iteration ``i`` (counted from ``start``)
    with ``i % every == 0`` it writes the model, ``i``, the relative error
    and, when given ``rng``, the state of that generator to ``path``,
    replacing the previous checkpoint atomically. It never stops the run.

    To resume, load the file and start the solver from it:
    ``cp_als(X, rank, init=state.cp, max_iter=left)``, and for solvers that
    draw random numbers during the iterations (`tensorfact.spals`)
    also ``rng=state.rng``. With the same data and options this continues
    the interrupted run exactly (up to rounding in the first iteration).

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file (an ``.npz`` archive whatever its name); its
        folder must exist.
    every : int
        Save after every ``every``-th iteration.
    rng : numpy.random.Generator, optional
        The generator the solver draws from (the very object passed as its
        ``rng=``), whose state is saved with the model.
    start : int
        Iterations completed before this run (a loaded checkpoint's
        ``iteration`` when resuming), so that the saved numbers and the
        ``every`` schedule continue across runs.

    Raises
    ------
    TypeError
        ``path`` is not a path, ``rng`` not a ``numpy.random.Generator``,
        ``every`` or ``start`` not an integer.
    ValueError
        ``path`` is a folder or its folder does not exist, ``every < 1``,
        ``start < 0``.

    Notes
    -----
    The arrays are stored on the host as NumPy arrays; `load` moves
    them to another namespace or device with ``like=``. The generator's
    ``spawn`` history (its seed sequence) is not saved, only its state.

    Examples
    --------
    >>> import os, tempfile
    >>> import numpy as np
    >>> from tensorfact import cp_als
    >>> from tensorfact.datasets import planted_cp
    >>> X, _ = planted_cp((10, 11, 12), rank=2, noise=0.1, rng=0)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.npz")
    >>> first = cp_als(X, 2, max_iter=4, tol=0, rng=0, callback=Checkpoint(path, every=2))
    >>> state = Checkpoint.load(path)
    >>> state.iteration, state.rel_error == first.history.rel_error[3]
    (4, True)
    >>> rest = cp_als(X, 2, init=state.cp, max_iter=3, tol=0,
    ...               callback=Checkpoint(path, every=2, start=state.iteration))
    >>> Checkpoint.load(path).iteration
    6
    """

    def __init__(self, path: str | os.PathLike[str], /, *, every: int = 1,
                 rng: np.random.Generator | None = None, start: int = 0) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
        self.path = os.fspath(path)
        folder = os.path.dirname(os.path.abspath(self.path))
        if os.path.isdir(self.path):
            raise ValueError(f"path {self.path!r} is a folder; give a file name")
        if not os.path.isdir(folder):
            raise ValueError(f"path {self.path!r}: folder {folder!r} does not exist")
        self.every = _check_int(every, "every", minimum=1)
        self.start = _check_int(start, "start", minimum=0)
        if rng is not None and not isinstance(rng, np.random.Generator):
            raise TypeError(
                "rng must be the numpy.random.Generator the solver draws from (or None), got "
                f"{type(rng).__name__}"
            )
        self.rng = rng
        #: the iteration number of the last checkpoint written by this object
        self.last_saved: int | None = None

    def __call__(self, iteration: int, cp: Any, rel_error: float) -> bool:
        """Save when ``start + iteration`` is a multiple of ``every``; never stop."""
        done = self.start + int(iteration)
        if done % self.every == 0:
            self.save(cp, done, rel_error)
        return False

    def save(self, cp: Any, iteration: int, rel_error: float) -> None:
        """Write ``cp``, ``iteration``, ``rel_error`` (and the rng state) to `path`.

        Raises
        ------
        TypeError
            ``cp`` is not a ``CPTensor`` (the callback of a solver that is
            not a CP solver).
        OSError
            Writing failed; a previous checkpoint at `path` is left as
            it was and no temporary file remains.
        """
        if not isinstance(cp, CPTensor):
            raise TypeError(f"Checkpoint saves CPTensor models (cp_als, spals), got "
                            f"{type(cp).__name__}")
        arrays: dict[str, np.ndarray] = {
            "format": np.array(_FORMAT),
            "version": np.array(_VERSION, dtype=np.int64),
            "iteration": np.array(int(iteration), dtype=np.int64),
            "rel_error": np.array(float(rel_error), dtype=np.float64),
            "weights": np.asarray(B.to_numpy(cp.weights)),
            "n_factors": np.array(len(cp.factors), dtype=np.int64),
            "rng_state": np.array("" if self.rng is None else _rng_state_json(self.rng)),
        }
        for n, A in enumerate(cp.factors):
            arrays[f"factor_{n}"] = np.asarray(B.to_numpy(A))
        _write_atomic(self.path, arrays)
        self.last_saved = int(iteration)

    @staticmethod
    def load(path: str | os.PathLike[str], /, *, like: Any = None) -> CheckpointState:
        """Read a checkpoint written by `Checkpoint` (never unpickles).

        Parameters
        ----------
        path : str or os.PathLike
        like : array, optional
            Put the factors and weights in this array's namespace, on its
            device and in its floating dtype (NumPy arrays when omitted).

        Returns
        -------
        CheckpointState
            ``.cp``, ``.iteration``, ``.rel_error``, ``.rng``.

        Raises
        ------
        FileNotFoundError
            No file at ``path``.
        ValueError
            The file is not a tensorfact checkpoint (or is of a newer
            version), or its generator state cannot be restored.
        """
        p = os.fspath(path)
        try:
            with np.load(p, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except FileNotFoundError:
            raise
        except (OSError, ValueError) as exc:
            raise ValueError(f"path {p!r} is not a tensorfact checkpoint ({exc})") from exc
        if str(data.get("format", "")) != _FORMAT:
            raise ValueError(f"path {p!r} is not a tensorfact checkpoint")
        try:
            version = int(data["version"])
            if version > _VERSION:
                raise ValueError(f"path {p!r} is a checkpoint of a newer version ({version}); "
                                 "upgrade tensorfact")
            factors = [data[f"factor_{n}"] for n in range(int(data["n_factors"]))]
            weights = data["weights"]
            iteration, rel_error = int(data["iteration"]), float(data["rel_error"])
            state_text = str(data["rng_state"])
        except KeyError as exc:
            raise ValueError(f"path {p!r} is an incomplete checkpoint: {exc} is missing") from exc
        if like is not None:
            if B.is_dask_array(like):
                like = like._meta
            xp = B.namespace(like)
            factors = [B.from_numpy(xp, A, like=like) for A in factors]
            weights = B.from_numpy(xp, weights, like=like)
        rng = _rng_from_json(state_text, p) if state_text else None
        return CheckpointState(CPTensor(factors, weights=weights), iteration, rel_error, rng)


def _check_int(value: Any, name: str, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if int(value) < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value!r}")
    return int(value)


def _write_atomic(path: str, arrays: dict[str, np.ndarray]) -> None:
    """Write an ``.npz`` under a temporary name beside ``path``, then rename it."""
    atomic_write(path, lambda fh: np.savez(fh, **arrays))  # type: ignore[arg-type]


def _rng_state_json(rng: np.random.Generator) -> str:
    """The bit generator's state as JSON (arrays as tagged lists)."""

    def encode(obj: Any) -> Any:
        dtype = getattr(obj, "dtype", None)  # NumPy arrays and scalars in the state
        if dtype is None:
            raise TypeError(f"cannot save a generator state holding {type(obj).__name__}")
        if getattr(obj, "ndim", 0) == 0:
            return obj.item()
        return {"__ndarray__": obj.tolist(), "dtype": dtype.str}

    return json.dumps(rng.bit_generator.state, default=encode)


def _rng_from_json(text: str, path: str) -> np.random.Generator:
    def decode(obj: dict[str, Any]) -> Any:
        if "__ndarray__" in obj:
            return np.array(obj["__ndarray__"], dtype=np.dtype(obj["dtype"]))
        return obj

    try:
        state = json.loads(text, object_hook=decode)
        name = state["bit_generator"]
        if name not in _BIT_GENERATORS:
            raise ValueError(f"unknown bit generator {name!r}")
        bit_generator = getattr(np.random, name)()
        bit_generator.state = state
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"path {path!r}: the saved generator state cannot be restored "
                         f"({exc})") from exc
    return np.random.Generator(bit_generator)
