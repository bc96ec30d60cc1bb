r"""Kronecker-structured 2-D convolutions (GKPD and SeKron) run as chains of small convolutions.

The kernel ``W`` of shape ``(out, in, kh, kw)`` is a sum of N-way Kronecker
products of 4-way factors (``i_n = j_n b_n + k_n`` in every mode, the
convention of `tensorfact.kron`):

* GKPD (Hameed et al., AAAI 2022): ``W = sum_r A_r ⊗ B_r``.
* SeKron (Hameed et al., arXiv:2210.06299): ``W = sum_{r0} A0[r0] ⊗
  sum_{r1} A1[r0, r1] ⊗ ... ⊗ A_{S-1}[r0..r_{S-2}]`` (nested sums; GKPD is
  ``S = 2``); see `tensorfact.SeKronTensor`.

The kernel is never formed. Splitting every index of
``y[o, p] = sum_{i, h} W[o, i, h] x_pad[i, p * stride + h * dilation]``
(one spatial axis shown) into its mixed-radix digits, spatial digit ``h_s``
of factor ``s`` moves the input by ``h_s * E_s`` with
``E_s = dilation * prod_{t > s} kh_t``: factor ``s`` is a convolution
*dilated by the spatial extent of the factors inside it*. So the layer pads
the input once and runs one valid convolution per factor, innermost
(``s = S-1``) first, each acting on its own channel digits (the other
channel digits ride in the batch dimension; the rank index ``r_s`` is a
channel of the intermediate result, and the nested prefix ``r_0..r_{s-1}``
becomes convolution groups).

Stride. Output ``p`` reads input positions ``p * stride + sum_s h_s E_s``.
After the stages ``S-1, ..., s`` have run, the next stages only need
positions that are multiples of ``G_s = gcd(stride, E_{s-1})`` (every
``E_t`` with ``t < s`` is a multiple of ``E_{s-1}``), so stage ``s`` runs
with stride ``G_s / G_{s+1}`` and dilation ``E_s / G_{s+1}`` in the units of
its input (``G_0 = stride``, ``G_S = 1``). This is exact for every stride,
dilation and padding (padding modes included: the input is padded once with
`torch.nn.functional.pad`, as `torch.nn.Conv2d` does), and
it subsamples as early as the structure allows; when ``stride`` is coprime to
the inner extents the inner stages run at stride 1 and only the outermost
one subsamples. ``groups`` must be 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._backend import check_rng
from .._validation import check_int_sequence
from ..tensors import SeKronTensor
from ._common import RNG, check_count, check_tensor, check_tensors, fill_normal_, fill_uniform_
from ._planner import KroneckerPlan, check_ranks, check_shapes, fit_kronecker, level_max_ranks

__all__ = ["GKPDConv2d", "KroneckerConvPlan", "SeKronConv2d", "kronecker_conv2d"]

_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


# --------------------------------------------------------------------------- #
# argument normalisation
# --------------------------------------------------------------------------- #
def _pair(value: Any, name: str, *, minimum: int = 1) -> tuple[int, int]:
    t: tuple[int, ...]
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        t = (int(value), int(value))
    else:
        try:
            t = tuple(int(v) for v in value)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}") from exc
        if len(t) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(t) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    return (t[0], t[1])


def _padding_arg(value: Any) -> str | tuple[int, int]:
    if isinstance(value, str):
        if value not in ("same", "valid"):
            raise ValueError(f"padding must be 'same', 'valid', an int or a pair, got {value!r}")
        return value
    return _pair(value, "padding", minimum=0)


def _pad_amounts(padding: str | tuple[int, int], kernel: tuple[int, int],
                 dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` for `torch.nn.functional.pad` (PyTorch's 'same')."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        th = dilation[0] * (kernel[0] - 1)
        tw = dilation[1] * (kernel[1] - 1)
        return (tw // 2, tw - tw // 2, th // 2, th - th // 2)
    if isinstance(padding, str):
        raise ValueError(f"padding must be 'same', 'valid' or a pair of ints, got {padding!r}")
    return (padding[1], padding[1], padding[0], padding[0])


# --------------------------------------------------------------------------- #
# the chain of convolutions
# --------------------------------------------------------------------------- #
def _stage_params(kernels: Sequence[tuple[int, int]], stride: tuple[int, int],
                  dilation: tuple[int, int]) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Per factor ``s`` (outermost first): ``(stride_s, dilation_s)`` of its stage.

    ``E_s = dilation * prod_{t>s} k_t``; ``G_0 = stride``,
    ``G_s = gcd(stride, E_{s-1})``, ``G_S = 1``; stage ``s`` has stride
    ``G_s / G_{s+1}`` and dilation ``E_s / G_{s+1}``.
    """
    S = len(kernels)
    out: list[list[tuple[int, int]]] = [[(0, 0)] * 2 for _ in range(S)]
    for ax in range(2):
        E = [dilation[ax] * math.prod(k[ax] for k in kernels[s + 1:]) for s in range(S)]
        G = [stride[ax]] + [math.gcd(stride[ax], E[s - 1]) for s in range(1, S)] + [1]
        for s in range(S):
            out[s][ax] = (G[s] // G[s + 1], E[s] // G[s + 1])
    return [((o[0][0], o[1][0]), (o[0][1], o[1][1])) for o in out]


def _conv_stage(z: Tensor, weight: Tensor, stride: tuple[int, int], dilation: tuple[int, int],
                groups: int) -> Tensor:
    """One valid convolution of the chain.

    Ungrouped convolutions with a spatial kernel go to `F.conv2d`; 1x1
    and grouped ones run as one batched GEMM per kernel tap: on CPU, oneDNN's
    1x1 path is tens of times slower than the same GEMM for channel counts
    that are not multiples of its vector width, and its grouped path is slow
    for many small groups (SeKron's nested ranks).
    """
    kh, kw = int(weight.shape[-2]), int(weight.shape[-1])
    if groups == 1 and (kh, kw) != (1, 1):
        return F.conv2d(z, weight, stride=stride, dilation=dilation)
    # grouped (oneDNN's grouped path is slow for many small groups) or 1x1: one batched
    # GEMM per kernel tap on the strided, shifted view of the input
    Bn, C, H, Wd = (int(d) for d in z.shape)
    O = int(weight.shape[0])
    Ho = (H - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    Wo = (Wd - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(f"input of spatial size {(H, Wd)} is smaller than the kernel extent")
    Og, Cg = O // groups, C // groups
    if stride == (1, 1) and (kh, kw) != (1, 1) and Og <= Cg:
        # one GEMM for all taps on the unshifted input, then add shifted output slices
        # (moves Og instead of Cg channels per tap)
        wt = weight.reshape(groups, Og, Cg, kh * kw).permute(0, 3, 1, 2)
        full = torch.matmul(wt.reshape(groups, kh * kw * Og, Cg),
                            z.reshape(Bn, groups, Cg, H * Wd))
        full = full.reshape(Bn, groups, kh, kw, Og, H, Wd)
        acc: Tensor | None = None
        for i in range(kh):
            for j in range(kw):
                h0, w0 = i * dilation[0], j * dilation[1]
                piece = full[:, :, i, j, :, h0:h0 + Ho, w0:w0 + Wo]
                acc = piece if acc is None else acc + piece
        if acc is None:  # pragma: no cover - a kernel has at least one tap
            raise RuntimeError("empty convolution kernel")
        return acc.reshape(Bn, O, Ho, Wo)
    zg = z.reshape(Bn, groups, Cg, H, Wd)
    wg = weight.reshape(groups, Og, Cg, kh, kw)
    out: Tensor | None = None
    for i in range(kh):
        for j in range(kw):
            h0, w0 = i * dilation[0], j * dilation[1]
            tap = zg[..., h0:h0 + (Ho - 1) * stride[0] + 1:stride[0],
                     w0:w0 + (Wo - 1) * stride[1] + 1:stride[1]]
            term = torch.matmul(wg[..., i, j], tap.reshape(Bn, groups, Cg, Ho * Wo))
            out = term if out is None else out + term
    if out is None:  # pragma: no cover - a kernel has at least one tap
        raise RuntimeError("empty convolution kernel")
    return out.reshape(Bn, O, Ho, Wo)


def kronecker_conv2d(x: Tensor, factors: Sequence[Tensor], ranks: Sequence[int], /, *,
                     bias: Tensor | None = None, stride: Any = 1, padding: Any = 0,
                     dilation: Any = 1, padding_mode: str = "zeros") -> Tensor:
    """2-D convolution with a SeKron/GKPD kernel, as a chain of small convolutions.

    Equals ``F.conv2d(x, W, bias, stride, padding, dilation)`` for the kernel
    ``W = SeKronTensor(factors, ranks).to_dense()`` (for GKPD, ``factors =
    (A, B)`` of shapes ``(R, *a_shape)``, ``(R, *b_shape)`` and
    ``ranks = (R,)``), without forming ``W``; see the module docstring for
    how stride and dilation are distributed over the chain.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, in, H, W)`` or ``(in, H, W)``.
    factors : sequence of S >= 2 tensors
        Factor ``s < S-1`` has shape ``(R_0, ..., R_s, O_s, I_s, kh_s, kw_s)``,
        the last ``(R_0, ..., R_{S-2}, O, I, kh, kw)``.
    ranks : sequence of S - 1 ints
    bias : torch.Tensor, optional
        ``(out,)``.
    stride, dilation : int or pair
    padding : int, pair, "same" or "valid"
    padding_mode : {"zeros", "reflect", "replicate", "circular"}

    Returns
    -------
    torch.Tensor
        ``(N, out, H_out, W_out)`` (unbatched when ``x`` is).

    Raises
    ------
    TypeError
        ``x`` or a factor not a `torch.Tensor` (NumPy is refused), ``ranks`` not integers.
    ValueError
        Shapes that do not match each other or ``ranks``.
    """
    x, factors = check_tensor(x, "x"), check_tensors(factors, "factors")
    S, rk = len(factors), check_int_sequence(ranks, "ranks")
    if S < 2 or len(rk) != S - 1:
        raise ValueError(f"need S >= 2 factors and S - 1 ranks, got {S} and {len(rk)}")
    shapes = []
    for s, Fs in enumerate(factors):
        k = min(s, S - 2) + 1
        if tuple(Fs.shape[:k]) != rk[:k] or Fs.ndim != k + 4:
            raise ValueError(f"factors[{s}] must have shape {rk[:k]} + (out, in, kh, kw) for "
                             f"ranks={rk}, got {tuple(Fs.shape)}")
        shapes.append(tuple(int(d) for d in Fs.shape[k:]))
    O = [sh[0] for sh in shapes]
    I_ = [sh[1] for sh in shapes]
    kernels = [(sh[2], sh[3]) for sh in shapes]
    st = _pair(stride, "stride")
    dil = _pair(dilation, "dilation")
    kernel = (math.prod(k[0] for k in kernels), math.prod(k[1] for k in kernels))
    pads = _pad_amounts(_padding_arg(padding), kernel, dil)
    if padding_mode not in _PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
    unbatched = x.ndim == 3
    if unbatched:
        x = x.unsqueeze(0)
    if x.ndim != 4 or x.shape[1] != math.prod(I_):
        raise ValueError(
            f"x must have shape (N, {math.prod(I_)}, H, W) or ({math.prod(I_)}, H, W), "
            f"got {tuple(x.shape)}"
        )
    if any(pads):
        mode = "constant" if padding_mode == "zeros" else padding_mode
        x = F.pad(x, pads, mode=mode)
    params = _stage_params(kernels, st, dil)
    N = int(x.shape[0])
    Q = [math.prod(rk[: s + 1]) for s in range(S - 1)]  # Q[s] = R_0 ... R_s

    # innermost factor: channels i_{S-1}; every other input digit rides in the batch
    s = S - 1
    Wt = factors[s].reshape(Q[S - 2] * O[s], I_[s], *kernels[s])
    z = _conv_stage(x.reshape(N * math.prod(I_[:s]), I_[s], x.shape[2], x.shape[3]), Wt,
                    params[s][0], params[s][1], 1)
    # z: [N, I_0..I_{S-2}, Q_{S-2}, O_{S-1}, H, W]; Ot = product of the outputs done so far
    Ot = O[s]
    for s in range(S - 2, -1, -1):
        qprev = Q[s - 1] if s > 0 else 1
        Rs = rk[s]
        H, Wd = int(z.shape[-2]), int(z.shape[-1])
        B0 = N * math.prod(I_[:s])
        # [B0, I_s, qprev, R_s, Ot, H, W] -> [B0, Ot, qprev, R_s, I_s, H, W]
        z = z.reshape(B0, I_[s], qprev, Rs, Ot, H, Wd).permute(0, 4, 2, 3, 1, 5, 6)
        z = z.reshape(B0 * Ot, qprev * Rs * I_[s], H, Wd)
        Wt = factors[s].reshape(qprev, Rs, O[s], I_[s], *kernels[s]).transpose(1, 2)
        Wt = Wt.reshape(qprev * O[s], Rs * I_[s], *kernels[s])
        z = _conv_stage(z, Wt, params[s][0], params[s][1], qprev)
        H, Wd = int(z.shape[-2]), int(z.shape[-1])
        # [B0, Ot, qprev, O_s, H, W] -> [B0, qprev, O_s, Ot, H, W]
        z = z.reshape(B0, Ot, qprev, O[s], H, Wd).permute(0, 2, 3, 1, 4, 5)
        Ot = O[s] * Ot
        z = z.reshape(B0, qprev, Ot, H, Wd)
    y = z.reshape(N, Ot, z.shape[-2], z.shape[-1])
    if bias is not None:
        y = y + bias.reshape(1, -1, 1, 1)
    return y.squeeze(0) if unbatched else y


#: the plan of a Kronecker-structured kernel (the same class as the linear layers' plan)
KroneckerConvPlan = KroneckerPlan


# --------------------------------------------------------------------------- #
# modules
# --------------------------------------------------------------------------- #
class _KroneckerConvBase(nn.Module):
    """Convolution hyper-parameters, forward chain, dense conversion, counts, initialisation."""

    in_channels: int
    out_channels: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int]
    padding: str | tuple[int, int]
    dilation: tuple[int, int]
    padding_mode: str
    shapes: tuple[tuple[int, ...], ...]
    ranks: tuple[int, ...]
    plan: KroneckerPlan | None
    bias: nn.Parameter | None
    #: name of the constructor's rank argument
    _rank_arg: str

    def _setup(self, in_channels: int, out_channels: int, kernel_size: Any,
               shapes: Any, ranks: tuple[int, ...], stride: Any, padding: Any,
               dilation: Any, groups: int, bias: bool, padding_mode: str,
               n_factors: int | None, device: Any, dtype: Any) -> None:
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if groups != 1:
            raise ValueError(f"only groups=1 is supported, got groups={groups!r}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {_PADDING_MODES}, got {padding_mode!r}")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.stride = _pair(stride, "stride")
        self.padding = _padding_arg(padding)
        self.dilation = _pair(dilation, "dilation")
        if self.padding == "same" and self.stride != (1, 1):
            raise ValueError("padding='same' needs stride 1 (as in torch.nn.Conv2d)")
        self.padding_mode = padding_mode
        self.shapes = check_shapes(
            shapes, (self.out_channels, self.in_channels, *self.kernel_size), n_factors)
        cap = level_max_ranks(self.shapes)
        if len(ranks) != len(self.shapes) - 1:
            raise ValueError(f"need {len(self.shapes) - 1} ranks, got {ranks}")
        for s, (r, c) in enumerate(zip(ranks, cap)):
            if not 1 <= r <= c:
                raise ValueError(f"rank of level {s} must be in 1..{c} for shapes "
                                 f"{self.shapes}, got {r}")
        self.ranks = ranks
        self.plan = None
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_channels, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)

    def _empty_factors(self, device: Any, dtype: Any) -> list[nn.Parameter]:
        """Uninitialised factor parameters in the layout of `tensorfact.SeKronTensor`."""
        S = len(self.shapes)
        return [nn.Parameter(torch.empty(self.ranks[: min(s, S - 2) + 1] + sh, device=device,
                                         dtype=dtype))
                for s, sh in enumerate(self.shapes)]

    def reset_parameters(self, *, rng: RNG = None) -> None:
        """Random factors giving the kernel `torch.nn.Conv2d`'s default variance.

        Host draws (SPEC 7); the bias is uniform in ``±1/sqrt(fan_in)``.
        """
        gen = check_rng(rng)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        factors = self._factor_list()
        # Var(W) = prod(ranks) * std^(2S) = 1 / (3 fan_in), nn.Conv2d's default variance
        std = (1.0 / (3.0 * fan_in * math.prod(self.ranks))) ** (1.0 / (2 * len(factors)))
        for f in factors:
            fill_normal_(f, std, gen)
        if self.bias is not None:
            fill_uniform_(self.bias, 1.0 / math.sqrt(fan_in), gen)

    def _factor_list(self) -> list[Tensor]:
        raise NotImplementedError

    def kernel(self) -> SeKronTensor:
        """The factors as a `tensorfact.SeKronTensor` (no copy; GKPD is ``S = 2``)."""
        return SeKronTensor(self._factor_list(), self.ranks)

    def forward(self, x: Tensor) -> Tensor:
        """The convolution as a chain of one small convolution per factor (kernel never formed)."""
        return kronecker_conv2d(x, self._factor_list(), self.ranks, bias=self.bias,
                                stride=self.stride, padding=self.padding,
                                dilation=self.dilation, padding_mode=self.padding_mode)

    def weight(self) -> Tensor:
        """The dense kernel ``(out, in, kh, kw)`` (formed on demand; differentiable)."""
        return self.kernel().to_dense()

    def to_dense(self) -> nn.Conv2d:
        """The equivalent `torch.nn.Conv2d` (a new layer; weights copied)."""
        W = self.weight().detach()
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size,
                         stride=self.stride, padding=self.padding, dilation=self.dilation,
                         bias=self.bias is not None,
                         padding_mode=self.padding_mode,  # type: ignore[arg-type]
                         device=W.device, dtype=W.dtype)
        with torch.no_grad():
            conv.weight.copy_(W)
            if self.bias is not None and conv.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.train(self.training)

    @property
    def n_params(self) -> int:
        """Number of parameters: the kernel's `n_params` + bias."""
        return self.kernel().n_params + (0 if self.bias is None else self.bias.numel())

    @property
    def compression(self) -> float:
        """Dense kernel entries divided by factor parameters (biases excluded)."""
        return self.kernel().compression_ratio

    def _conv_repr(self) -> str:
        s = (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
             f"stride={self.stride}")
        if self.padding not in ((0, 0), "valid"):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode!r}"
        return s + f", bias={self.bias is not None}"

    @classmethod
    def _fit_conv(cls, conv: nn.Conv2d, /, *, n_factors: int, rank: Any, compression: Any,
                  shapes: Any, max_candidates: int) -> Any:
        """The layer initialised from ``conv`` by the planner's optimal factors."""
        if not isinstance(conv, nn.Conv2d):
            raise TypeError(f"conv must be a torch.nn.Conv2d, got {type(conv).__name__}")
        if conv.groups != 1:
            raise ValueError(f"only groups=1 convolutions are supported, got groups={conv.groups}")
        W = conv.weight
        fit = fit_kronecker(W, product="conv", n_factors=n_factors, rank=rank,
                            compression=compression, shapes=shapes,
                            max_candidates=max_candidates)
        rk = fit.plan.ranks  # one level (GKPD): its int, which SeKronConv2d takes too
        kw: dict[str, Any] = {
            cls._rank_arg: rk[0] if len(rk) == 1 else rk, "stride": conv.stride,
            "padding": conv.padding,
            "dilation": conv.dilation, "bias": conv.bias is not None,
            "padding_mode": conv.padding_mode}
        layer = cls(conv.in_channels, conv.out_channels, conv.kernel_size,  # type: ignore[call-arg]
                    shapes=fit.plan.shapes, rng=0, device=W.device, dtype=W.dtype, **kw)
        with torch.no_grad():
            for p, f in zip(layer._factor_list(), fit.tensors(W)):
                p.copy_(f)
            if conv.bias is not None and layer.bias is not None:
                layer.bias.copy_(conv.bias)
        layer.plan = fit.plan
        return layer.train(conv.training)


class GKPDConv2d(_KroneckerConvBase):
    r"""2-D convolution whose kernel is a sum of Kronecker products (GKPD).

    ``W = sum_{r<R} A_r ⊗ B_r`` with ``A_r`` of shape ``a_shape = (O_a, I_a,
    kh_a, kw_a)`` and ``B_r`` of shape ``b_shape = (O_b, I_b, kh_b, kw_b)``,
    ``W`` of shape ``(O_a O_b, I_a I_b, kh_a kh_b, kw_a kw_b)``. The forward
    pass is two convolutions (module docstring of `tensorfact.nn._conv`):
    ``B`` (dilation ``d``) on the input with ``I_a`` folded into the batch,
    then ``A`` with dilation ``d * (kh_b, kw_b)`` on the ``R I_a`` channels of
    each of the ``O_b`` outputs. Cost per output pixel (stride 1):
    ``R (I_a O_b I_b kh_b kw_b + O_a O_b I_a kh_a kw_a)`` multiply-adds
    versus ``O I kh kw`` for the dense kernel. Parameters:
    ``R (|A| + |B|)`` (+ ``out`` with bias).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or pair
    shapes : pair of 4-tuples
        ``(a_shape, b_shape)``, multiplying to ``(out, in, kh, kw)``.
    rank : int
        Number of Kronecker terms ``R``, ``1 <= R <= min(|A|, |B|)``.
    stride, padding, dilation, groups, bias, padding_mode
        As for `torch.nn.Conv2d` (``groups`` must be 1).
    rng : None, int or numpy.random.Generator
        Randomness for the initial factors (host draws, SPEC 7), scaled so
        that the kernel has `torch.nn.Conv2d`'s default variance.
    device, dtype
        Where the parameters live.

    Attributes
    ----------
    kron_a, kron_b : torch.nn.Parameter
        Shapes ``(R, *a_shape)`` and ``(R, *b_shape)`` (the storage of
        `tensorfact.KroneckerTensor`).
    plan : KroneckerPlan or None
        Shapes, rank and optimal relative error when built by `from_conv`.

    References
    ----------
    M. G. A. Hameed, M. S. Tahaei, A. Mosleh, V. Partovi Nia, "Convolutional
    Neural Network Compression through Generalized Kronecker Product
    Decomposition", AAAI 2022.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(8, 8, 3, padding=1)
    >>> layer = GKPDConv2d.from_conv(conv)          # full rank: exact
    >>> x = torch.randn(2, 8, 10, 10)
    >>> bool(torch.allclose(layer(x), conv(x), atol=1e-5))
    True
    >>> small = GKPDConv2d.from_conv(conv, compression=4.0)
    >>> small.compression >= 4.0, small.plan.rel_error < 1.0
    (True, True)
    """

    _rank_arg = "rank"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, *,
                 shapes: Sequence[Sequence[int]], rank: int = 1, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        ranks = (check_count(rank, "rank"),)
        self._setup(in_channels, out_channels, kernel_size, shapes, ranks, stride, padding,
                    dilation, groups, bias, padding_mode, 2, device, dtype)
        self.kron_a, self.kron_b = self._empty_factors(device, dtype)
        self.reset_parameters(rng=rng)

    @property
    def rank(self) -> int:
        """Number of Kronecker terms."""
        return self.ranks[0]

    def _factor_list(self) -> list[Tensor]:
        return [self.kron_a, self.kron_b]

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, /, *, rank: int | None = None,
                  compression: float | None = None,
                  shapes: Sequence[Sequence[int]] | None = None,
                  max_candidates: int = 6) -> GKPDConv2d:
        """Initialise from a pretrained convolution by the nearest sum of Kronecker products.

        The factors are the optimal ones (`tensorfact.nearest_kronecker`
        on a float64 host copy of the kernel), cast to ``conv``'s dtype and
        device; stride, padding, dilation, padding mode and bias are copied.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            Pretrained layer with ``groups=1`` (left unchanged).
        rank : int, optional
            Number of terms (capped at the full Kronecker rank).
        compression : float, optional
            Target ratio of kernel entries to factor parameters: the rank is
            the largest within the budget. With neither ``rank`` nor
            ``compression`` the full rank is used (exact reproduction).
        shapes : (a_shape, b_shape), optional
            Factor shapes. When omitted, the planner
            (`tensorfact.nn._planner.fit_kronecker`) compares
            ``max_candidates`` candidates of `tensorfact.kronecker_shapes`
            (chains cheaper than the dense convolution, largest rank first)
            and keeps the one with the smallest optimal error.
        max_candidates : int
            How many candidate shapes to decompose when ``shapes`` is omitted.

        Returns
        -------
        GKPDConv2d
            With ``plan`` (`KroneckerPlan`) holding the shapes, the
            rank and the relative kernel error reported by
            `tensorfact.nearest_kronecker` (optimal for that shape and
            rank), which the layer attains.

        Raises
        ------
        TypeError
            ``conv`` is not a `torch.nn.Conv2d`.
        ValueError
            ``groups != 1``, both ``rank`` and ``compression``, bad shapes,
            or an unreachable compression.
        """
        layer: GKPDConv2d = cls._fit_conv(conv, n_factors=2, rank=rank, compression=compression,
                                          shapes=shapes, max_candidates=max_candidates)
        return layer

    def extra_repr(self) -> str:
        return (f"{self._conv_repr()}, a_shape={self.shapes[0]}, b_shape={self.shapes[1]}, "
                f"rank={self.rank}")


class SeKronConv2d(_KroneckerConvBase):
    r"""2-D convolution whose kernel is a sequence of Kronecker products (SeKron).

    ``W = sum_{r0} A0[r0] ⊗ sum_{r1} A1[r0, r1] ⊗ ... ⊗ A_{S-1}[r0..r_{S-2}]``
    with 4-way factors of shapes ``shapes[s]`` (outermost first) and level
    ranks ``ranks`` (see `tensorfact.SeKronTensor`; ``S = 2`` is
    GKPD). The forward pass is ``S`` convolutions, innermost factor first,
    each dilated by the spatial extent of the factors inside it; the nested
    rank prefix becomes convolution groups. Parameters:
    ``sum_{s<S-1} R_0..R_s |A_s| + R_0..R_{S-2} |A_{S-1}|`` (+ ``out``).

    Parameters
    ----------
    in_channels, out_channels : int
    kernel_size : int or pair
    shapes : sequence of S >= 2 4-tuples
        Factor shapes multiplying to ``(out, in, kh, kw)``.
    ranks : int or sequence of S - 1 ints
        Level ranks (an int is used for every level).
    stride, padding, dilation, groups, bias, padding_mode
        As for `torch.nn.Conv2d` (``groups`` must be 1).
    rng : None, int or numpy.random.Generator
        Randomness for the initial factors (host draws, SPEC 7).
    device, dtype
        Where the parameters live.

    Attributes
    ----------
    factors : torch.nn.ParameterList
        Factor ``s`` has shape ``(R_0, ..., R_s, *shapes[s])`` (the last one
        ``(R_0, ..., R_{S-2}, *shapes[S-1])``), as in
        `tensorfact.SeKronTensor`.
    plan : KroneckerPlan or None
        Shapes, ranks and relative error when built by `from_conv`.

    References
    ----------
    Hameed, Mosleh, Tahaei & Partovi Nia, SeKron (arXiv:2210.06299, 2022): the
    decomposition computed by `tensorfact.sekron`, whose docstring has the
    full reference.

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(8, 16, 3, stride=2, padding=1)
    >>> layer = SeKronConv2d.from_conv(conv, shapes=[(2, 2, 1, 1), (2, 2, 1, 1), (4, 2, 3, 3)])
    >>> x = torch.randn(2, 8, 9, 9)
    >>> bool(torch.allclose(layer(x), conv(x), atol=1e-5))
    True
    >>> layer.ranks
    (4, 4)
    """

    _rank_arg = "ranks"

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, *,
                 shapes: Sequence[Sequence[int]], ranks: int | Sequence[int] = 1,
                 stride: Any = 1, padding: Any = 0, dilation: Any = 1, groups: int = 1,
                 bias: bool = True, padding_mode: str = "zeros",
                 rng: RNG = None, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        try:
            n = len(shapes)
        except TypeError as exc:
            raise TypeError(f"shapes must be a sequence of 4-tuples, got {shapes!r}") from exc
        rk = check_ranks(ranks, max(n - 1, 1))
        if rk is None:
            raise ValueError("ranks must be a positive int or a sequence of ints, got None")
        self._setup(in_channels, out_channels, kernel_size, shapes, rk, stride, padding,
                    dilation, groups, bias, padding_mode, None, device, dtype)
        self.factors = nn.ParameterList(self._empty_factors(device, dtype))
        self.reset_parameters(rng=rng)

    def _factor_list(self) -> list[Tensor]:
        return list(self.factors)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, /, *, rank: int | Sequence[int] | None = None,
                  compression: float | None = None,
                  shapes: Sequence[Sequence[int]] | None = None, n_factors: int = 3,
                  max_candidates: int = 6) -> SeKronConv2d:
        """Initialise from a pretrained convolution by `tensorfact.sekron`.

        Parameters
        ----------
        conv : torch.nn.Conv2d
            Pretrained layer with ``groups=1`` (left unchanged).
        rank : int or sequence of int, optional
            Level ranks (each capped at its maximum).
        compression : float, optional
            Target ratio of kernel entries to factor parameters: the largest
            uniform rank within the budget. With neither ``rank`` nor
            ``compression`` every level has full rank (exact reproduction).
        shapes : sequence of 4-tuples, optional
            Factor shapes (outermost first); when omitted, the planner
            (`tensorfact.nn._planner.fit_kronecker`) compares
            ``max_candidates`` ``n_factors``-factor candidates (chains cheaper
            than the dense convolution, largest ranks first) and keeps the one
            with the smallest error.
        n_factors : int
            Number of factors ``S`` when ``shapes`` is omitted.
        max_candidates : int
            How many candidate shapes to decompose when ``shapes`` is omitted.

        Returns
        -------
        SeKronConv2d
            With ``plan`` (`KroneckerPlan`) holding the relative
            kernel error reported by `tensorfact.sekron`, which the
            layer attains.

        Raises
        ------
        TypeError, ValueError
            As `GKPDConv2d.from_conv`, and for ``shapes`` of fewer than two
            factors.
        """
        n = len(shapes) if shapes is not None else n_factors
        layer: SeKronConv2d = cls._fit_conv(conv, n_factors=n, rank=rank,
                                            compression=compression, shapes=shapes,
                                            max_candidates=max_candidates)
        return layer

    def extra_repr(self) -> str:
        return f"{self._conv_repr()}, shapes={self.shapes}, ranks={self.ranks}"

