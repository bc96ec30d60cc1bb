"""Reproductions of published experiments, written against the public API only.

``tensorfact reproduce spals`` (or `run_spals_reproduction`) reruns the
SPALS experiments of Cheng et al. (NeurIPS 2016); see
`tensorfact.reproduce.spals`.
"""

from .spals import SCALES, ReproduceConfig, add_reproduce_parser, run_spals_reproduction

__all__ = ["SCALES", "ReproduceConfig", "add_reproduce_parser", "run_spals_reproduction"]
