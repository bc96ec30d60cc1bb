"""Second-order recurrent cells: the dense 2RNN and its CP-factored form (CPRNN).

A second-order RNN (2RNN) updates its state with a bilinear term in the
previous state and the current input,

    h_t = g( T x_1 h_{t-1} x_2 x_t + V h_{t-1} + U x_t + b ),

where ``T`` is a third-order tensor of shape ``(hidden, input, hidden)``
(``(T x_1 h x_2 x)_k = sum_ij T[i, j, k] h_i x_j``). CPRNN (Lizaire et al.,
ICML 2024) writes ``T`` as a rank-``R`` CP tensor ``[[A, B, C]]``, so the
bilinear term becomes ``C ((A^T h) * (B^T x))`` and costs ``O(R (2H + D))``
instead of ``O(H^2 D)`` per step.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from .._backend import check_rng
from ..decomposition import cp_als
from ._common import RNG, check_count, host_uniform

__all__ = ["CPRNN", "CPRNNCell", "SecondOrderRNN", "SecondOrderRNNCell"]

_NONLINEARITIES = ("tanh", "relu", "identity")


def _check_nonlinearity(value: Any) -> str:
    if value not in _NONLINEARITIES:
        raise ValueError(f"nonlinearity must be one of {_NONLINEARITIES}, got {value!r}")
    return str(value)


def _apply_nonlinearity(name: str, z: torch.Tensor) -> torch.Tensor:
    if name == "tanh":
        return torch.tanh(z)
    if name == "relu":
        return torch.relu(z)
    return z


class _SecondOrderBase(nn.Module):
    """Shared first-order part (``V h + U x + b``), checks and the non-linearity."""

    input_size: int
    hidden_size: int
    nonlinearity: str

    def _init_first_order(self, input_size: int, hidden_size: int, bias: bool,
                          nonlinearity: str, gen: np.random.Generator,
                          device: Any, dtype: Any) -> None:
        self.input_size = check_count(input_size, "input_size")
        self.hidden_size = check_count(hidden_size, "hidden_size")
        self.nonlinearity = _check_nonlinearity(nonlinearity)
        bound = 1.0 / math.sqrt(self.hidden_size)
        H, D = self.hidden_size, self.input_size
        self.weight_hh = nn.Parameter(host_uniform(gen, (H, H), bound, device=device, dtype=dtype))
        self.weight_ih = nn.Parameter(host_uniform(gen, (H, D), bound, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(host_uniform(gen, (H,), bound, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def _check_inputs(self, x: torch.Tensor, h: torch.Tensor | None
                      ) -> tuple[torch.Tensor, torch.Tensor, bool]:
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        unbatched = x.ndim == 1
        if unbatched:
            x = x.unsqueeze(0)
        if x.ndim != 2 or x.shape[1] != self.input_size:
            raise ValueError(
                f"x must have shape (batch, {self.input_size}) or ({self.input_size},), "
                f"got {tuple(x.shape)}"
            )
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size)
        else:
            if not isinstance(h, torch.Tensor):
                raise TypeError(f"h must be a torch.Tensor or None, got {type(h).__name__}")
            if unbatched and h.ndim == 1:
                h = h.unsqueeze(0)
            if tuple(h.shape) != (x.shape[0], self.hidden_size):
                raise ValueError(
                    f"h must have shape ({x.shape[0]}, {self.hidden_size}) to match x, "
                    f"got {tuple(h.shape)}"
                )
        return x, h, unbatched

    def _first_order(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        z = nn.functional.linear(h, self.weight_hh) + nn.functional.linear(x, self.weight_ih)
        if self.bias is not None:
            z = z + self.bias
        return z

    def _bilinear(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, h: torch.Tensor | None = None) -> torch.Tensor:
        """One step: the next hidden state from ``x`` (batch, input) and ``h`` (batch, hidden).

        ``h=None`` starts from zeros; unbatched ``x`` of shape ``(input,)``
        gives an unbatched result.
        """
        x, h, unbatched = self._check_inputs(x, h)
        out = _apply_nonlinearity(self.nonlinearity, self._bilinear(x, h) + self._first_order(x, h))
        return out.squeeze(0) if unbatched else out

    def _copy_first_order_to(self, other: _SecondOrderBase) -> None:
        with torch.no_grad():
            other.weight_hh.copy_(self.weight_hh)
            other.weight_ih.copy_(self.weight_ih)
            if self.bias is not None and other.bias is not None:
                other.bias.copy_(self.bias)

    @property
    def n_params(self) -> int:
        """Number of parameters (the formula of the class docstring)."""
        return sum(p.numel() for p in self.parameters())


class SecondOrderRNNCell(_SecondOrderBase):
    r"""Dense second-order RNN cell (2RNN).

    ``h_t = g(T x_1 h_{t-1} x_2 x_t + V h_{t-1} + U x_t + b)`` with the full
    third-order tensor ``T`` of shape ``(hidden_size, input_size,
    hidden_size)``. Parameters: ``H^2 D + H^2 + H D (+ H)`` for hidden size
    ``H`` and input size ``D``.

    Parameters
    ----------
    input_size, hidden_size : int
        ``D`` and ``H``.
    bias : bool
        Learn the bias ``b``.
    nonlinearity : {"tanh", "relu", "identity"}
        The activation ``g``.
    rng : None, int or numpy.random.Generator
        Randomness for the initial weights (drawn on the host, SPEC 7):
        uniform in ``(-1/sqrt(H), 1/sqrt(H))`` like `torch.nn.RNNCell`,
        and ``T`` uniform in ``(-1/H, 1/H)``.
    device, dtype
        Where the parameters live.

    Attributes
    ----------
    weight_hxh : torch.nn.Parameter
        ``T``, shape ``(H, D, H)``.
    weight_hh, weight_ih, bias : torch.nn.Parameter
        ``V`` (H, H), ``U`` (H, D) and ``b`` (H,), as in `torch.nn.RNNCell`.

    References
    ----------
    M. Lizaire, M. Rizvi-Martel, M. G. Abdel Hameed, G. Rabusseau, "A tensor
    decomposition perspective on second-order RNNs", ICML 2024.

    Examples
    --------
    >>> import torch
    >>> cell = SecondOrderRNNCell(3, 4, rng=0)
    >>> cell(torch.ones(2, 3)).shape
    torch.Size([2, 4])
    >>> cell.n_params == 4 * 4 * 3 + 4 * 4 + 4 * 3 + 4
    True
    """

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 nonlinearity: str = "tanh", rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        gen = check_rng(rng)
        self._init_first_order(input_size, hidden_size, bias, nonlinearity, gen, device, dtype)
        H, D = self.hidden_size, self.input_size
        self.weight_hxh = nn.Parameter(host_uniform(gen, (H, D, H), 1.0 / H, device=device,
                                                    dtype=dtype))

    def _bilinear(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        H, D = self.hidden_size, self.input_size
        outer = (h.unsqueeze(2) * x.unsqueeze(1)).reshape(h.shape[0], H * D)
        return outer @ self.weight_hxh.reshape(H * D, H)

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"bias={self.bias is not None}, nonlinearity={self.nonlinearity!r}")


class CPRNNCell(_SecondOrderBase):
    r"""Second-order RNN cell with a rank-``R`` CP tensor (CPRNN).

    ``h_t = g(C[(A^T h_{t-1}) * (B^T x_t)] + V h_{t-1} + U x_t + b)``, i.e. the
    2RNN of `SecondOrderRNNCell` with ``T = [[A, B, C]]``,
    ``T[i, j, k] = sum_r A[i, r] B[j, r] C[k, r]``. Parameters:
    ``R (2H + D) + H^2 + H D (+ H)``.

    Parameters
    ----------
    input_size, hidden_size : int
        ``D`` and ``H``.
    rank : int
        CP rank ``R``.
    bias : bool
        Learn the bias ``b``.
    nonlinearity : {"tanh", "relu", "identity"}
        The activation ``g``.
    rng : None, int or numpy.random.Generator
        Randomness for the initial weights (host draws, SPEC 7). ``V, U, b``
        as in `torch.nn.RNNCell`; ``A, B, C`` uniform with bounds that
        give the bilinear term the scale of the dense cell's initialisation.
    device, dtype
        Where the parameters live.

    Attributes
    ----------
    factor_h, factor_x, factor_out : torch.nn.Parameter
        ``A`` (H, R), ``B`` (D, R), ``C`` (H, R).
    weight_hh, weight_ih, bias : torch.nn.Parameter
        ``V``, ``U`` and ``b``.
    init_rel_error : float or None
        Relative CP reconstruction error ``||T - [[A, B, C]]|| / ||T||`` when
        built by `from_second_order`, else ``None``.

    References
    ----------
    Lizaire et al., ICML 2024, as for `SecondOrderRNNCell`.

    Examples
    --------
    >>> import torch
    >>> cell = CPRNNCell(3, 4, rank=2, rng=0)
    >>> h = cell(torch.ones(5, 3))
    >>> dense = cell.to_dense()
    >>> bool(torch.allclose(dense(torch.ones(5, 3)), h, atol=1e-6))
    True
    >>> cell.n_params == 2 * (2 * 4 + 3) + 4 * 4 + 4 * 3 + 4
    True
    """

    init_rel_error: float | None

    def __init__(self, input_size: int, hidden_size: int, rank: int, *, bias: bool = True,
                 nonlinearity: str = "tanh", rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        gen = check_rng(rng)
        self._init_first_order(input_size, hidden_size, bias, nonlinearity, gen, device, dtype)
        self.rank = check_count(rank, "rank")
        H, D, R = self.hidden_size, self.input_size, self.rank
        # each factor uniform(-c, c): var(C[(A^T h)*(B^T x)]) ~ R (c^2/3)^3 H D |h|^2 |x|^2/(HD)
        c = (1.0 / (H * math.sqrt(max(R, 1)))) ** (1.0 / 3.0)
        self.factor_h = nn.Parameter(host_uniform(gen, (H, R), c, device=device, dtype=dtype))
        self.factor_x = nn.Parameter(host_uniform(gen, (D, R), c, device=device, dtype=dtype))
        self.factor_out = nn.Parameter(host_uniform(gen, (H, R), c, device=device, dtype=dtype))
        self.init_rel_error = None

    def _bilinear(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return ((h @ self.factor_h) * (x @ self.factor_x)) @ self.factor_out.T

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, hidden_size={self.hidden_size}, "
                f"rank={self.rank}, bias={self.bias is not None}, "
                f"nonlinearity={self.nonlinearity!r}")

    def to_dense(self) -> SecondOrderRNNCell:
        """The equivalent `SecondOrderRNNCell` (``T = [[A, B, C]]`` materialised)."""
        p = self.factor_h
        dense = SecondOrderRNNCell(self.input_size, self.hidden_size, bias=self.bias is not None,
                                   nonlinearity=self.nonlinearity, rng=0, device=p.device,
                                   dtype=p.dtype)
        with torch.no_grad():
            T = torch.einsum("ir,jr,kr->ijk", self.factor_h, self.factor_x, self.factor_out)
            dense.weight_hxh.copy_(T)
        self._copy_first_order_to(dense)
        return dense.train(self.training)

    @classmethod
    def from_second_order(cls, cell: SecondOrderRNNCell, rank: int, *,
                          max_iter: int = 500, tol: float = 1e-10, n_init: int = 1,
                          rng: RNG = None) -> CPRNNCell:
        """CPRNN cell whose ``A, B, C`` are a rank-``rank`` CP-ALS fit of ``cell``'s tensor.

        ``V``, ``U`` and ``b`` are copied. The CP fit runs
        `tensorfact.cp_als` on a float64 host copy of ``T`` (``H^2 D``
        numbers; the factors are cast back to the cell's dtype and device) and
        its relative error is stored in ``init_rel_error`` (and equals
        ``||T - to_dense().weight_hxh|| / ||T||`` up to rounding). CP weights
        are absorbed into ``C``.

        Parameters
        ----------
        cell : SecondOrderRNNCell
            The dense cell (not modified).
        rank : int
            CP rank ``R``.
        max_iter, tol, n_init, rng
            Passed to `tensorfact.cp_als`.

        Returns
        -------
        CPRNNCell
            On ``cell``'s device, in its dtype.

        Raises
        ------
        TypeError
            ``cell`` is not a `SecondOrderRNNCell`.
        """
        if not isinstance(cell, SecondOrderRNNCell):
            raise TypeError(f"cell must be a SecondOrderRNNCell, got {type(cell).__name__}")
        rank = check_count(rank, "rank")
        W = cell.weight_hxh
        new = cls(cell.input_size, cell.hidden_size, rank, bias=cell.bias is not None,
                  nonlinearity=cell.nonlinearity, rng=0, device=W.device, dtype=W.dtype)
        # float64 host copy (H^2 D entries, like the dense cell's own parameters)
        T = W.detach().cpu().to(torch.float64).numpy()
        res = cp_als(T, rank, max_iter=max_iter, tol=tol, n_init=n_init, rng=rng)
        weights, (A, Bf, C) = res.cp
        with torch.no_grad():
            new.factor_h.copy_(torch.as_tensor(A))
            new.factor_x.copy_(torch.as_tensor(Bf))
            new.factor_out.copy_(torch.as_tensor(C * weights))
        cell._copy_first_order_to(new)
        new.init_rel_error = float(res.rel_error)
        return new.train(cell.training)


class _SequenceBase(nn.Module):
    """Runs a cell over batch-first sequences."""

    cell: _SecondOrderBase

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def hidden_size(self) -> int:
        return self.cell.hidden_size

    @property
    def n_params(self) -> int:
        """Number of parameters (those of the cell)."""
        return self.cell.n_params

    def forward(self, x: torch.Tensor, h0: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run over a batch-first sequence.

        Parameters
        ----------
        x : torch.Tensor
            Shape ``(batch, time, input_size)`` (or ``(time, input_size)``).
        h0 : torch.Tensor, optional
            Initial state ``(batch, hidden_size)``; zeros when omitted.

        Returns
        -------
        output : torch.Tensor
            Every state, ``(batch, time, hidden_size)``.
        h_n : torch.Tensor
            The last state, ``(batch, hidden_size)``.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        unbatched = x.ndim == 2
        if unbatched:
            x = x.unsqueeze(0)
            if h0 is not None and h0.ndim == 1:
                h0 = h0.unsqueeze(0)
        if x.ndim != 3 or x.shape[2] != self.input_size:
            raise ValueError(
                f"x must have shape (batch, time, {self.input_size}), got {tuple(x.shape)}"
            )
        h = h0
        outs = []
        for t in range(x.shape[1]):
            h = self.cell(x[:, t], h)
            outs.append(h)
        if h is None:  # zero-length sequence
            h = x.new_zeros(x.shape[0], self.hidden_size)
            out = x.new_zeros(x.shape[0], 0, self.hidden_size)
        else:
            out = torch.stack(outs, dim=1)
        if unbatched:
            return out.squeeze(0), h.squeeze(0)
        return out, h

    def extra_repr(self) -> str:
        return ""


class SecondOrderRNN(_SequenceBase):
    """Dense second-order RNN over batch-first sequences (a `SecondOrderRNNCell` loop).

    Parameters are those of `SecondOrderRNNCell`.

    Examples
    --------
    >>> import torch
    >>> rnn = SecondOrderRNN(3, 4, rng=0)
    >>> out, h = rnn(torch.ones(2, 5, 3))
    >>> out.shape, h.shape
    (torch.Size([2, 5, 4]), torch.Size([2, 4]))
    """

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True,
                 nonlinearity: str = "tanh", rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.cell = SecondOrderRNNCell(input_size, hidden_size, bias=bias,
                                       nonlinearity=nonlinearity, rng=rng, device=device,
                                       dtype=dtype)


class CPRNN(_SequenceBase):
    """CPRNN over batch-first sequences (a `CPRNNCell` loop).

    Parameters and references are those of `CPRNNCell`.

    Examples
    --------
    >>> import torch
    >>> rnn = CPRNN(3, 4, rank=2, rng=0)
    >>> out, h = rnn(torch.ones(2, 5, 3))
    >>> dense_out, _ = rnn.to_dense()(torch.ones(2, 5, 3))
    >>> bool(torch.allclose(out, dense_out, atol=1e-6))
    True
    """

    cell: CPRNNCell

    def __init__(self, input_size: int, hidden_size: int, rank: int, *, bias: bool = True,
                 nonlinearity: str = "tanh", rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.cell = CPRNNCell(input_size, hidden_size, rank, bias=bias,
                              nonlinearity=nonlinearity, rng=rng, device=device, dtype=dtype)

    @property
    def rank(self) -> int:
        return self.cell.rank

    @property
    def init_rel_error(self) -> float | None:
        """The cell's CP reconstruction error (see `CPRNNCell.from_second_order`)."""
        return self.cell.init_rel_error

    def to_dense(self) -> SecondOrderRNN:
        """The equivalent `SecondOrderRNN`."""
        c = self.cell
        out = SecondOrderRNN(c.input_size, c.hidden_size, rng=0,
                             device=c.factor_h.device, dtype=c.factor_h.dtype)
        out.cell = c.to_dense()
        return out

    @classmethod
    def from_second_order(cls, rnn: SecondOrderRNN | SecondOrderRNNCell, rank: int,
                          **kwargs: Any) -> CPRNN:
        """CPRNN initialised from a dense 2RNN by CP-ALS (`CPRNNCell.from_second_order`)."""
        cell = rnn.cell if isinstance(rnn, SecondOrderRNN) else rnn
        if not isinstance(cell, SecondOrderRNNCell):
            raise TypeError(f"rnn must be a SecondOrderRNN or SecondOrderRNNCell, "
                            f"got {type(rnn).__name__}")
        new_cell = CPRNNCell.from_second_order(cell, rank, **kwargs)
        out = cls(new_cell.input_size, new_cell.hidden_size, rank, rng=0,
                  device=new_cell.factor_h.device, dtype=new_cell.factor_h.dtype)
        out.cell = new_cell
        return out
