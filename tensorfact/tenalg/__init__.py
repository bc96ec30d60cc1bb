"""Tensor algebra building blocks: unfolding, Khatri-Rao products, MTTKRP."""

from ._khatri_rao import khatri_rao, krp_rows
from ._kron import group_modes, kron, kron_matmul, rearrange, ungroup_modes, unrearrange
from ._leverage import leverage_scores
from ._mttkrp import DimensionTree, mttkrp, mttkrp_sweep
from ._sampling import KRPSample, sample_krp_rows
from ._ttm import TuckerTree, multi_mode_dot
from ._unfold import fold, unfold

__all__ = [
    "KRPSample", "leverage_scores", "sample_krp_rows",
    "group_modes", "kron", "kron_matmul", "rearrange", "ungroup_modes", "unrearrange",
    "DimensionTree", "fold", "khatri_rao", "krp_rows", "mttkrp", "mttkrp_sweep", "unfold",
    "TuckerTree", "multi_mode_dot"]
