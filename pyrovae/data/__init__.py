"""Datasets as device tensors: load once, split, binarize, and slice minibatches on the device.

Every dataset ends up as three float32 tensors ``train``/``valid``/``test`` of shape
``(N, *x_shape)`` that live on one device (:class:`Splits`); minibatches are index slices of
those tensors, so there is no ``DataLoader`` and no Python loop over examples.

Files are looked for in a cache folder ``root`` (default :func:`default_root`). A read-only
*mirror* (``mirror=`` or the ``PYROVAE_DATA_MIRROR`` environment variable) holding the original
files (``MNIST/raw/*.gz``, ``FashionMNIST/raw/*.gz``, ``KMNIST/raw/*.gz``,
``CIFAR10/cifar-10-python.tar.gz``, ``binarized_mnist/*.amat.gz``) is copied into ``root``
(md5-checked where torchvision knows the md5, atomically) and never written to.

The package:

- :mod:`~pyrovae.data.splits`: :class:`Splits`, minibatches, splitting and binarization;
- :mod:`~pyrovae.data.cache`: the cache folder and the mirror;
- :mod:`~pyrovae.data.sources`: one small class per dataset, and the registry ``SOURCES``;
- :mod:`~pyrovae.data.load`: :func:`load_data`, the same for every source;
- :mod:`~pyrovae.data.checks`: argument checks.
"""

from pyrovae.data.cache import default_root, resolve_mirror
from pyrovae.data.load import DATASETS, load_data
from pyrovae.data.sources import IMAGE_SUFFIXES, SOURCES
from pyrovae.data.splits import (
    BINARIZE,
    DEFAULT_VALID,
    DEFAULT_VALID_FRACTION,
    TEST_BINARIZATION_SEED,
    TEST_FRACTION,
    TRAIN_BINARIZATION_SEED,
    VALID_BINARIZATION_SEED,
    Splits,
    binarize_dynamic,
)

__all__ = [
    "BINARIZE",
    "DATASETS",
    "DEFAULT_VALID",
    "DEFAULT_VALID_FRACTION",
    "IMAGE_SUFFIXES",
    "SOURCES",
    "TEST_BINARIZATION_SEED",
    "TEST_FRACTION",
    "TRAIN_BINARIZATION_SEED",
    "VALID_BINARIZATION_SEED",
    "Splits",
    "binarize_dynamic",
    "default_root",
    "load_data",
    "resolve_mirror",
]
