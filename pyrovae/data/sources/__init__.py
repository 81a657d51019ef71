"""The registry of data sources: ``data.name`` -> source class.

A new torchvision-backed dataset is a short class (see :class:`~.mnist.KMNIST`) and a line in
:data:`SOURCES`; the contract tests then run over it too.
"""

from __future__ import annotations

from pyrovae.data.sources.base import (
    CachedSource,
    Fake,
    PathSource,
    Raw,
    Source,
    TorchvisionSource,
)
from pyrovae.data.sources.binarized_mnist import BinarizedMNIST
from pyrovae.data.sources.cifar import CIFAR10
from pyrovae.data.sources.folder import IMAGE_SUFFIXES, ImageFolder
from pyrovae.data.sources.mnist import KMNIST, MNIST, FashionMNIST, IdxSource
from pyrovae.data.sources.npy import NpyFile

SOURCES: dict[str, type[Source]] = {
    source.name: source
    for source in (
        MNIST,
        FashionMNIST,
        KMNIST,
        CIFAR10,
        BinarizedMNIST,
        ImageFolder,
        NpyFile,
    )
}

__all__ = [
    "CIFAR10",
    "IMAGE_SUFFIXES",
    "KMNIST",
    "MNIST",
    "SOURCES",
    "BinarizedMNIST",
    "CachedSource",
    "Fake",
    "FashionMNIST",
    "IdxSource",
    "ImageFolder",
    "NpyFile",
    "PathSource",
    "Raw",
    "Source",
    "TorchvisionSource",
]
