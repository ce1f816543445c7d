"""Datasets for the course's exercises, read from disk and downloaded when missing."""

from npnn.datasets.mnist import DataError, MissingDataError, MNIST, load_mnist

__all__ = ["DataError", "MissingDataError", "MNIST", "load_mnist"]
