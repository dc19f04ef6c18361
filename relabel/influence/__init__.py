"""Influence solvers: exact (Cholesky, logistic model) and LiSSA (any PyTorch model)."""

from relabel.influence.base import InfluenceSolver, TrainingGradients

__all__ = ["InfluenceSolver", "TrainingGradients"]
