"""Data-source connectors: each turns a source (Label Studio project, plain file) into a LabeledDataset."""

from relabel.dataset import LabeledDataset

__all__ = ["LabeledDataset"]
