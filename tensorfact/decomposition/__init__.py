"""Decomposition algorithms."""

from ._checkpoint import Checkpoint, CheckpointState
from ._cp_als import cp_als
from ._cp_apr import CPAPRResult, cp_apr
from ._joint import *  # noqa: F403  (the joint triangularization family, see its __all__)
from ._joint import __all__ as _joint_all
from ._kronecker import (
    KroneckerShape,
    NearestKroneckerResult,
    gkpd,
    kronecker_shapes,
    nearest_kronecker,
)
from ._monitor import ConvergenceHistory
from ._nonneg import nonnegative_cp
from ._results import CPALSResult, TuckerResult
from ._sampled_lstsq import SampledLstsqResult, sampled_krp_lstsq
from ._sekron import SeKronResult, sekron
from ._spals import spals, spals_sample_count
from ._tucker import hosvd, tucker

__all__ = [
    "CPALSResult", "Checkpoint", "CheckpointState", "ConvergenceHistory", "cp_als",
    "SampledLstsqResult", "sampled_krp_lstsq", "spals", "spals_sample_count",
    "KroneckerShape", "NearestKroneckerResult", "gkpd", "kronecker_shapes", "nearest_kronecker",
    "SeKronResult", "sekron",
    "TuckerResult", "hosvd", "tucker",
    "nonnegative_cp",
    "CPAPRResult", "cp_apr",
    *_joint_all,
]
