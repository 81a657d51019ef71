""":func:`load_data`: one path for every registered source (cache, splits, binarization)."""

from __future__ import annotations

from pathlib import Path

import torch

from pyrovae.data import checks
from pyrovae.data.cache import cache_root, make_root, resolve_mirror, undo_on_failure
from pyrovae.data.sources import SOURCES, CachedSource, PathSource
from pyrovae.data.splits import (
    BINARIZE,
    Splits,
    apply_limit,
    binarize_at_load,
    shuffle_split,
    split_official,
)
from pyrovae.errors import PyrovaeError

DATASETS = tuple(SOURCES)


def load_data(
    name: str,
    root: str | Path | None = None,
    mirror: str | None = None,
    path: str | None = None,
    limit: int | None = None,
    binarize: str = "dynamic",
    valid_size: int | float | None = None,  # noqa: PYI041
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Splits:
    """Load a dataset as train/valid/test float32 tensors on ``device``.

    name: one of :data:`DATASETS`. root: cache folder (default :func:`default_root`).
    mirror: read-only folder of original files (default ``PYROVAE_DATA_MIRROR``).
    path: the image folder (``folder``) or ``.npy`` file (``npy``).
    limit: keep only the first ``limit`` training examples (after the split).
    binarize: 'dynamic' (train resampled per batch, valid/test drawn once with a fixed seed),
    'static' (all drawn once with a fixed seed), or 'none'.
    valid_size: number (int) or fraction (float) of examples held out for validation; default
    the last 10000 training examples for torchvision datasets, 10% for folder/npy.
    seed: seed of the one fixed shuffle of folder/npy data before splitting (``pyrovae.fit``
        keeps the default for every run, whatever ``train.seed``: runs with different seeds
        share their validation and test sets, and no run trains on another's test data).
    device: where the three tensors live; they are moved there once.

    binarized_mnist is already binary: binarize may be 'static' or 'none' (the data are used
    as they are and ``Splits.binarize`` is 'static'); 'dynamic' is an error. The load-time
    draws use fixed seeds on the CPU, so the binary valid/test sets are the same on every
    device and for every ``seed``. A load that fails leaves the cache folder as it was.
    """
    key = checks.dataset_name(name, DATASETS)
    binarize = checks.binarize_name(binarize, BINARIZE)
    limit = checks.check_limit(limit)
    checks.check_valid_size(valid_size)
    seed = checks.check_seed(seed)
    dev = checks.device(device)
    source = SOURCES[key]()
    if isinstance(source, PathSource):
        if path is None or str(path) == "":
            raise PyrovaeError(f"data.name={key} needs data.path: the {source.path_kind} to load")
    elif path is not None:
        takes_path = " or ".join(n for n, s in SOURCES.items() if issubclass(s, PathSource))
        raise PyrovaeError(
            f"data.path is only used with data.name={takes_path}, not {key}: drop data.path"
        )
    source.check(binarize, valid_size)

    if isinstance(source, PathSource):
        raw = source.read(path)
    else:
        assert isinstance(source, CachedSource)
        mirror_dir = resolve_mirror(mirror)
        root_dir = cache_root(root, mirror_dir)
        with undo_on_failure(root_dir / Path(source.folder()).parts[0]):
            raw = source.load(make_root(root_dir), mirror_dir)

    if raw.test is None:
        train, valid, test = shuffle_split(raw.train, valid_size, seed, raw.origin)
    elif raw.valid is None:
        train, valid, test = split_official(
            raw.train, raw.test, valid_size, source.default_valid, key
        )
    else:
        train, valid, test = raw.train, raw.valid, raw.test
    train = apply_limit(train, limit)
    if source.binarized is not None:
        binarize, sentence = "static", source.binarized
    else:
        train, valid, test, sentence = binarize_at_load(binarize, train, valid, test, key)
    return Splits(
        name=key,
        binarize=binarize,
        train=train.to(dev),
        valid=valid.to(dev),
        test=test.to(dev),
        test_binarization=sentence,
    )
