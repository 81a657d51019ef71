"""Splits and minibatches: shuffled device slices, dynamic binarization resampled each epoch
(on synthetic grey images: no data files needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from pyrovae.data import Splits, binarize_dynamic, load_data
from tests.conftest import is_binary as _is_binary
from tests.conftest import one_line_error as _error

# --------------------------------------------------------------------------------------------
# minibatches and dynamic binarization


@pytest.fixture(scope="module")
def grey() -> Splits:
    """1000 grey 28 x 28 images with MNIST's mix of exact 0s, exact 1s and levels in between."""
    g = torch.Generator().manual_seed(0)
    levels = torch.randint(0, 256, (1030, 1, 28, 28), generator=g).float() / 255
    mask = torch.rand(levels.shape, generator=g)
    x = torch.where(mask < 0.6, 0.0, torch.where(mask < 0.7, 1.0, levels))
    test = torch.bernoulli(x[1020:], generator=g)
    return Splits("grey", "dynamic", x[:1000], test[:10], test[10:], "test sentence")


def _small(grey: Splits, n: int, binarize: str = "dynamic") -> Splits:
    return dataclasses.replace(grey, train=grey.train[:n].clone(), binarize=binarize)


def test_batches_are_binary_and_sized(grey: Splits) -> None:
    s = _small(grey, 1000)
    g = torch.Generator().manual_seed(0)
    batches = list(s.train_batches(128, g))
    assert [len(b) for b in batches] == [128] * 7 + [104]
    assert all(_is_binary(b) and b.shape[1:] == (1, 28, 28) for b in batches)
    assert [len(b) for b in s.train_batches(128, g, drop_last=True)] == [128] * 7


def test_batches_cover_train_once_per_epoch(grey: Splits) -> None:
    s = _small(grey, 1000, binarize="none")
    epoch = torch.cat(list(s.train_batches(96, torch.Generator().manual_seed(1))))
    assert not torch.equal(epoch, s.train)  # shuffled ...
    assert sorted(r.numpy().tobytes() for r in epoch) == sorted(
        r.numpy().tobytes() for r in s.train
    )


def test_dynamic_binarization_mean_matches_grey_levels(grey: Splits) -> None:
    """Per-pixel sums over an epoch are permutation-invariant: E = sum_i x_i, Var = sum x(1-x)."""
    s = _small(grey, 500)
    g = torch.Generator().manual_seed(2)
    epochs = 100
    total = torch.zeros(s.x_shape)
    for _ in range(epochs):
        for batch in s.train_batches(64, g):
            total += batch.sum(0)
    mean = total / epochs
    expected = s.train.sum(0)
    se = torch.sqrt((s.train * (1 - s.train)).sum(0) / epochs)
    fixed = se == 0
    assert torch.equal(mean[fixed], expected[fixed])
    z = (mean - expected)[~fixed] / se[~fixed]
    assert float(z.abs().max()) < 6
    overall = (mean - expected).sum() / torch.sqrt((se**2).sum())
    assert abs(float(overall)) < 5


def test_binarize_dynamic_is_bernoulli() -> None:
    """x = [u < p]: exactly 0 at p = 0 and 1 at p = 1, and mean p within 5 SE elsewhere."""
    p = torch.tensor([0.0, 1.0, 0.001, 0.3, 0.5, 0.97]).repeat(200_000, 1)
    x = binarize_dynamic(p, torch.Generator().manual_seed(0))
    assert x.dtype == p.dtype and _is_binary(x)
    assert torch.equal(x[:, 0], p[:, 0]) and torch.equal(x[:, 1], p[:, 1])
    mean, q = x.mean(0)[2:], p[0, 2:]
    se = torch.sqrt(q * (1 - q) / p.shape[0])
    assert float(((mean - q) / se).abs().max()) < 5


def test_dynamic_binarization_resampled_each_epoch(grey: Splits) -> None:
    s = _small(grey, 1)  # one image: the shuffle cannot change anything
    g = torch.Generator().manual_seed(3)
    first, second = (next(iter(s.train_batches(1, g))) for _ in range(2))
    assert _is_binary(first) and not torch.equal(first, second)


def test_same_generator_seed_same_batches(grey: Splits) -> None:
    s = _small(grey, 300)
    a = list(s.train_batches(50, torch.Generator().manual_seed(7)))
    b = list(s.train_batches(50, torch.Generator().manual_seed(7)))
    c = list(s.train_batches(50, torch.Generator().manual_seed(8)))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_train_batches_bad_arguments(grey: Splits) -> None:
    s = _small(grey, 10)
    g = torch.Generator()
    for bad in (0, -1, 2.5, True):
        _error(s.train_batches, bad, g, match=("batch_size",))
    _error(s.train_batches, 4, 123, match=("torch.Generator",))


def test_to_and_repr(grey: Splits) -> None:
    s = _small(grey, 10).to("cpu")
    assert s.train.device.type == "cpu" and len(s.train) == 10
    text = repr(s)
    assert "(10, 1, 28, 28)" in text and len(text) < 300
    _error(s.to, "no-such-device", match=("device",))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_device(tmp_path: Path) -> None:
    x = np.random.default_rng(0).random((40, 5), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    s = load_data("npy", path=str(tmp_path / "x.npy"), device="cuda")
    cpu = load_data("npy", path=str(tmp_path / "x.npy"))
    assert s.train.is_cuda and s.test.is_cuda
    assert torch.equal(s.test.cpu(), cpu.test)  # the binary test set does not depend on device
    batches = list(s.train_batches(8, torch.Generator(device="cuda").manual_seed(0)))
    assert all(b.is_cuda and _is_binary(b) for b in batches)
    _error(s.train_batches, 8, torch.Generator(), match=("generator",))
