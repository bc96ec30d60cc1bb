"""The iteration monitor shared by every iterative solver.

A solver's loop does the numerical work (MTTKRP, solve, normalise, error) and
hands each iteration's relative error to `IterationMonitor.record`,
which keeps the history (error and elapsed time), raises
``FloatingPointError`` on a non-finite value, logs, updates the progress bar
(``verbose=True``), calls the user's callback (returning ``True`` stops) and
applies the tolerance test. The solver then builds its result from
`IterationMonitor.history`, `n_iter` and
`converged`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .._validation import check_nonneg_float, check_positive_int, check_real

__all__ = ["ConvergenceHistory", "IterationMonitor", "check_callback"]


@dataclass(frozen=True)
class ConvergenceHistory:
    """Per-iteration trace of an iterative solver (one type for every solver).

    Attributes
    ----------
    rel_error : tuple of float
        The solver's relative error after each iteration: for CP solvers
        ``||X - X_hat||_F / ||X||_F`` (estimated, for sampled solvers, unless
        stated); for `tensorfact.joint_triangularize` the relative
        size of the strictly lower parts, ``sqrt(loss / sum_n ||M_n||_F^2)``.
    time : tuple of float
        Wall-clock seconds elapsed since the start of the iterations, after
        each iteration.
    objective : tuple of float or None
        The solver's own objective where it is not the relative error (the
        triangularization loss of `tensorfact.joint_triangularize`, the
        Poisson log-likelihood of `tensorfact.cp_apr`),
        same indexing as ``rel_error``; ``None`` otherwise.
    """

    rel_error: tuple[float, ...]
    time: tuple[float, ...]
    objective: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        # sequences of real numbers of one length, stored as tuples of floats
        n = None
        for name in ("rel_error", "time", "objective"):
            value = getattr(self, name)
            if value is None and name == "objective":
                continue
            if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
                raise TypeError(f"{name} must be a sequence of numbers, got "
                                f"{type(value).__name__}")
            floats = tuple(check_real(v, f"{name} entries", allow_inf=True) for v in value)
            if n is not None and len(floats) != n:
                raise ValueError(f"{name} has {len(floats)} entries but rel_error has {n}")
            n = len(floats) if n is None else n
            object.__setattr__(self, name, floats)

    def __len__(self) -> int:
        return len(self.rel_error)


def check_callback(callback: Any) -> Any:
    """Validate the ``callback`` argument of a solver (``None`` or a callable)."""
    if callback is not None and not callable(callback):
        raise TypeError(f"callback must be callable or None, got {type(callback).__name__}")
    return callback


class IterationMonitor:
    """History, stopping tests, callback, progress bar and logging of one run.

    Parameters
    ----------
    name : str
        The solver's name, used in the progress bar, log records and error
        messages.
    max_iter : int
        The progress bar's length; the solver's loop runs at most this many
        iterations (``for it in monitor.iterations(): ...``).
    tol : float or None
        Stop (converged) when the relative error changes by less than ``tol``
        between consecutive iterations. ``None`` disables the test (for
        solvers with their own convergence test, passed to `record`).
    callback : callable, optional
        ``callback(iteration, model, rel_error)`` after every iteration;
        returning ``True`` stops the run (not converged).
    verbose : bool
        Show a tqdm progress bar with the current error.
    logger : logging.Logger, optional
        Where iteration records go (debug level) and the summary (info).
    hint : str
        Appended to the ``FloatingPointError`` message (what the user may try).
    """

    def __init__(self, name: str, *, max_iter: int, tol: float | None = None,
                 callback: Callable[[int, Any, float], Any] | None = None,
                 verbose: bool = False, logger: logging.Logger | None = None,
                 hint: str = "") -> None:
        self.name = name
        self.max_iter = check_positive_int(max_iter, "max_iter")
        self.tol = None if tol is None else check_nonneg_float(tol, "tol")
        self.callback = check_callback(callback)
        self.verbose = bool(verbose)
        self.logger = logger if logger is not None else logging.getLogger(f"tensorfact.{name}")
        self.hint = hint
        self.converged = False
        self.stopped_by_callback = False
        self._errors: list[float] = []
        self._objective: list[float] = []
        self._times: list[float] = []
        self._n_iter = 0
        self._bar: Any = None
        self._t0 = time.perf_counter()

    # ------------------------------------------------------------------ #
    def __enter__(self) -> IterationMonitor:
        self._t0 = time.perf_counter()
        if self.verbose:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=self.max_iter, desc=self.name, leave=False)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if exc[0] is None:
            self.logger.info("%s: %d iterations, relative error %.3e, converged=%s", self.name,
                             self._n_iter, self.rel_error, self.converged)

    def iterations(self) -> range:
        """The iteration numbers ``1, ..., max_iter`` for the solver's loop."""
        return range(1, self.max_iter + 1)

    # ------------------------------------------------------------------ #
    def _check_finite(self, value: float, what: str) -> None:
        if not math.isfinite(value):
            hint = f"; {self.hint}" if self.hint else ""
            raise FloatingPointError(
                f"{self.name} produced a non-finite {what} at iteration {self._n_iter + 1}{hint}"
            )

    def start(self, rel_error: float, *, objective: float | None = None) -> None:
        """Record the value at the starting point (iteration 0; no callback, no test)."""
        self._check_finite(rel_error, "initial error")
        self._append(rel_error, objective)

    def record(self, rel_error: float, model: Callable[[], Any] | None = None, *,
               objective: float | None = None, finite: bool = True,
               converged: bool = False) -> bool:
        """Record one finished iteration; return ``True`` when the loop must stop.

        Parameters
        ----------
        rel_error : float
            The iteration's relative error.
        model : callable, optional
            Builds the current model for the callback (called only when a
            callback is set, so the solver pays nothing otherwise).
        objective : float, optional
            The solver's own objective, kept in ``history.objective``.
        finite : bool
            ``False`` when the solver found a non-finite iterate itself
            (weights, factors): raises ``FloatingPointError``.
        converged : bool
            The solver's own convergence test passed (stops, converged).

        Raises
        ------
        FloatingPointError
            ``rel_error`` or ``objective`` is NaN/Inf, or ``finite`` is False.
        """
        self._check_finite(rel_error, "iterate")
        if not finite:
            self._check_finite(math.nan, "iterate")
        if objective is not None:
            self._check_finite(objective, "objective")
        self._n_iter += 1
        self._append(rel_error, objective)
        self.logger.debug("%s iteration %d: relative error %.3e", self.name, self._n_iter,
                          rel_error)
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix(rel_error=f"{rel_error:.3e}")
        if self.callback is not None and model is not None:
            if self.callback(self._n_iter, model(), rel_error):
                self.stopped_by_callback = True
                return True
        if converged:
            self.converged = True
            return True
        if (self.tol is not None and len(self._errors) > 1
                and abs(self._errors[-2] - rel_error) < self.tol):
            self.converged = True
            return True
        return False

    def mark_converged(self) -> None:
        """Declare convergence without a new iteration (a solver's own test)."""
        self.converged = True

    def _append(self, rel_error: float, objective: float | None) -> None:
        self._errors.append(float(rel_error))
        if objective is not None:
            self._objective.append(float(objective))
        self._times.append(time.perf_counter() - self._t0)

    def replace_last(self, rel_error: float, *, objective: float | None = None) -> None:
        """Overwrite the last recorded value (a solver's final exact recomputation)."""
        self._check_finite(rel_error, "final error")
        self._errors[-1] = float(rel_error)
        if objective is not None and self._objective:
            self._objective[-1] = float(objective)

    # ------------------------------------------------------------------ #
    @property
    def n_iter(self) -> int:
        """Number of iterations recorded (the starting point excluded)."""
        return self._n_iter

    @property
    def rel_error(self) -> float:
        """The last recorded relative error (NaN before any record)."""
        return self._errors[-1] if self._errors else math.nan

    @property
    def history(self) -> ConvergenceHistory:
        """The frozen trace of the run so far."""
        obj = tuple(self._objective) if self._objective else None
        return ConvergenceHistory(tuple(self._errors), tuple(self._times), obj)
