"""Dask plumbing: the active scheduler, shared inputs, tree reductions.

The library holds no scheduler state and never creates a client: graphs are
computed with `dask.compute`, i.e. on whatever scheduler is active
(the local threaded one by default, a ``distributed.Client`` when the user
has made one the default).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

try:
    import dask
    from dask.delayed import delayed
except ImportError as exc:  # pragma: no cover - exercised without dask
    raise ImportError(
        "DaskSparseTensor needs dask: pip install 'dask[distributed]'"
    ) from exc

__all__ = ["active_client", "compute", "share", "shared_memory", "task", "tree_reduce"]

#: partial results combined per node of a tree reduction
SPLIT_EVERY = 8


def active_client() -> Any:
    """The ``distributed.Client`` that runs ``dask.compute`` now, or ``None``.

    Looks the client up (``distributed.get_client``), never creates one, and
    returns it only when it is the active scheduler.
    """
    try:
        from distributed import get_client
    except ImportError:
        return None
    try:
        client = get_client()
    except ValueError:
        return None
    sched = dask.base.get_scheduler()
    return client if getattr(sched, "__self__", None) is client else None


def shared_memory() -> bool:
    """Whether the active scheduler runs tasks in this process (threads or synchronous)."""
    if active_client() is not None:
        return False
    import dask.local
    import dask.threaded

    sched = dask.base.get_scheduler()
    return sched is None or sched in (dask.threaded.get, dask.local.get_sync)


def share(obj: Any, client: Any) -> Any:
    """``obj`` as one graph input used by every task of a call.

    Scattered to the workers (broadcast) when a distributed client is
    active; otherwise one delayed key.
    """
    if client is not None:
        return client.scatter(obj, broadcast=True, hash=False)
    return delayed(obj, name=f"shared-{uuid.uuid4().hex}", traverse=False)


def task(func: Callable[..., Any], *args: Any) -> Any:
    """A delayed call of ``func``."""
    return delayed(func, pure=False)(*args)


def tree_reduce(parts: list[Any], combine: Callable[..., Any]) -> Any:
    """Combine delayed partial results ``SPLIT_EVERY`` at a time, level by level."""
    while len(parts) > 1:
        parts = [task(combine, *parts[i:i + SPLIT_EVERY])
                 for i in range(0, len(parts), SPLIT_EVERY)]
    return parts[0]


def compute(*objs: Any) -> tuple[Any, ...]:
    """Compute delayed objects on the active scheduler."""
    return dask.compute(*objs)
