"""Joint (simultaneous) triangularization of nearly commuting matrices.

Given real ``d x d`` matrices ``M_1, ..., M_N`` that are (up to noise) jointly
diagonalizable, ``M_n = V diag(lambda_n) V^{-1}``, find an orthogonal ``U``
that makes every ``U^T M_n U`` upper triangular, bound how far ``U`` is from
an exact joint triangularizer of the noise-free matrices (a posteriori, from
observable quantities only), recover the joint eigenvectors and eigenvalues,
and decompose a 3-way tensor through it (Jennrich-type CP).

Host round trip
---------------
The matrices handled here are small (``d`` is a CP rank or a matrix size of
at most a few hundred), and the algorithms need the real Schur form, sparse
Jacobians and many tiny dense solves. `joint_triangularize`,
`triangularization_error_bound` and `joint_eigen` therefore copy
the ``(N, d, d)`` stack to the host once (``tensorfact._backend.to_numpy``),
work in float64 with NumPy/SciPy, and move the (equally small) results back
to the caller's namespace, device and dtype. `cp_joint_schur` touches
the full tensor only inside the caller's namespace (compression, least
squares for the third factor); only the ``R x R x K`` core goes to the host.

The mathematics (the Gauss-Newton step on the orthogonal group, the exact
Jacobi rotation, and the derivation of the error bound) is written out in
``docs/joint.md``.

Modules: ``_results`` (result objects), ``_checks`` (input validation),
``_objective`` (loss, Jacobian, gradient, Gram forms), ``_gauss_newton`` and
``_jacobi`` (the iterations), ``_matrix_free`` (products with the
Jacobian, preconditioned CG and LOBPCG for large ``d``), ``_solver``
(`joint_triangularize`),
``_bound`` (`triangularization_error_bound`) and ``_schur_cp``
(`joint_eigen`, `cp_joint_schur`).
"""

from ._bound import triangularization_error_bound
from ._results import *  # noqa: F403  (the result objects and warning, see its __all__)
from ._results import __all__ as _results_all
from ._schur_cp import cp_joint_schur, joint_eigen
from ._solver import joint_triangularize

__all__ = [
    *_results_all,
    "cp_joint_schur",
    "joint_eigen",
    "joint_triangularize",
    "triangularization_error_bound",
]
