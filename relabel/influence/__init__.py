"""Influence solvers: exact (Cholesky, logistic model), and for any PyTorch model direct (H + δI formed
from Hessian-vector products, one Cholesky), conjugate gradients and LiSSA, chosen by ``auto``."""

from relabel.influence.base import InfluenceSolver, TrainingGradients

__all__ = ["InfluenceSolver", "TrainingGradients"]
