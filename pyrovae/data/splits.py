"""Train/valid/test splits on one device, their minibatches, and binarization.

Every dataset ends up as three float32 tensors ``train``/``valid``/``test`` of shape
``(N, *x_shape)`` that live on one device; minibatches are index slices of those tensors, so
there is no ``DataLoader`` and no Python loop over examples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from typing import NamedTuple

import torch

from pyrovae.data.checks import device as _device
from pyrovae.errors import PyrovaeError

BINARIZE = ("dynamic", "static", "none")

#: Fixed seeds of the load-time binarizations: independent of ``seed`` so that every run
#: evaluates on the same binary valid/test sets.
TEST_BINARIZATION_SEED = 123
VALID_BINARIZATION_SEED = 124
TRAIN_BINARIZATION_SEED = 125

#: Default validation size for the torchvision datasets: the standard 50k/10k split.
DEFAULT_VALID = 10000
#: Fractions held out for validation and test when a dataset has no official split.
DEFAULT_VALID_FRACTION = 0.1
TEST_FRACTION = 0.1


def binarize_dynamic(p: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Binary pixels x ~ Bernoulli(p), drawn as x = [u < p] with u ~ U[0, 1) on p's device
    (dynamic binarization, resampled every epoch as in Burda et al. 2015). The same law as
    ``torch.bernoulli``, about 3x faster on the CPU, where that draws element by element."""
    u = torch.rand(p.shape, generator=generator, device=p.device, dtype=p.dtype)
    return (u < p).to(p.dtype)


@dataclass(repr=False)
class Splits:
    """Train/valid/test tensors of one dataset, float32, shape ``(N, *x_shape)``, on one device."""

    name: str
    binarize: str  # 'dynamic' | 'static' | 'none'
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    test_binarization: str  # one sentence: how the test set was binarized

    @property
    def x_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. ``(1, 28, 28)``."""
        return tuple(self.train.shape[1:])

    @property
    def device(self) -> torch.device:
        """The device all three tensors live on."""
        return self.train.device

    def train_batches(
        self, batch_size: int, generator: torch.Generator, drop_last: bool = False
    ) -> Iterator[torch.Tensor]:
        """Shuffled minibatches sliced from the device tensor (one epoch).

        The permutation is drawn on the device with ``generator`` (which must live on the
        same kind of device as the data). When ``binarize == 'dynamic'`` each batch is
        binarized on the device (``binarize_dynamic``), so the binarization is resampled every
        epoch.
        """
        _check_batch_args(batch_size, generator, self.device)
        return self._batches(batch_size, generator, drop_last)

    def _batches(
        self, batch_size: int, generator: torch.Generator, drop_last: bool
    ) -> Iterator[torch.Tensor]:
        n = self.train.shape[0]
        perm = torch.randperm(n, generator=generator, device=self.device)
        stop = n - n % batch_size if drop_last else n
        for start in range(0, stop, batch_size):
            batch = self.train.index_select(0, perm[start : start + batch_size])
            if self.binarize == "dynamic":
                batch = binarize_dynamic(batch, generator)
            yield batch

    def to(self, device: str | torch.device) -> Splits:
        """A copy with the three tensors moved to ``device``."""
        dev = _device(device)
        return dataclasses.replace(
            self, train=self.train.to(dev), valid=self.valid.to(dev), test=self.test.to(dev)
        )

    def __repr__(self) -> str:
        sizes = ", ".join(
            f"{k}={tuple(getattr(self, k).shape)}" for k in ("train", "valid", "test")
        )
        return (
            f"Splits(name={self.name!r}, binarize={self.binarize!r}, {sizes}, "
            f"device={str(self.device)!r})"
        )


def _check_batch_args(batch_size: int, generator: torch.Generator, device: torch.device) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise PyrovaeError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(generator, torch.Generator):
        raise PyrovaeError(
            f"generator must be a torch.Generator, got {type(generator).__name__}; "
            f"make one with torch.Generator(device={str(device)!r}).manual_seed(seed)"
        )
    if generator.device.type != device.type:
        raise PyrovaeError(
            f"the generator is on {generator.device} but the data are on {device}: "
            f"make it with torch.Generator(device={str(device)!r})"
        )


# --------------------------------------------------------------------------------------------
# sharding across the ranks of a data-parallel run (pyrovae.distributed)

#: Rows per chunk of the validation and test ELBO (``objectives.dataset_elbo``'s batch): the
#: ranks share out every chunk, so that their sums add up to the one-process sums.
EVAL_CHUNK = 1000


def part_bounds(total: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``rank``'s part of ``total`` rows shared out among ``world_size``
    ranks: contiguous parts in rank order whose sizes differ by at most one, the larger first
    (the rule of ``torch.tensor_split``)."""
    size, extra = divmod(total, world_size)
    lo = rank * size + min(rank, extra)
    return lo, lo + size + (rank < extra)


def chunk_parts(n: int, rank: int, world_size: int, chunk: int = EVAL_CHUNK) -> list[tuple]:
    """For each chunk of ``chunk`` rows of ``n``: ``(start, lo, hi, length)``, the chunk's first
    row, ``rank``'s part ``[lo, hi)`` within it, and its length."""
    out = []
    for start in range(0, n, chunk):
        length = min(chunk, n - start)
        out.append((start, *part_bounds(length, rank, world_size), length))
    return out


class RankBatch(NamedTuple):
    """One rank's part of a global minibatch of ``total`` rows: rows ``[lo, hi)`` of it."""

    x: torch.Tensor
    lo: int
    hi: int
    total: int


@dataclass(repr=False)
class ShardedSplits(Splits):
    """The data of one rank of ``world_size`` in a data-parallel run.

    ``train`` is the whole training set in host (CPU) memory: every epoch shuffles the whole set
    (:meth:`train_parts`) and moves to the device only this rank's part of that epoch's
    minibatches. ``valid`` and ``test`` are this rank's shards, on the device: its part of every
    chunk of :data:`EVAL_CHUNK` rows (:func:`chunk_parts`), ``num_valid`` and ``num_test`` the
    sizes of the whole sets; ``full_test`` (host memory) is for the figures of rank 0.
    """

    rank: int = 0
    world_size: int = 1
    num_valid: int = 0
    num_test: int = 0
    full_test: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.valid.device

    def train_parts(self, batch_size: int, generator: torch.Generator) -> Iterator[RankBatch]:
        """This rank's parts of one epoch's global minibatches of ``batch_size``.

        The permutation of the whole training set is drawn with ``generator`` (seeded alike on
        every rank) exactly as :meth:`Splits.train_batches` draws it, and global minibatch j is
        the same rows; this rank takes its part of each (:func:`part_bounds`), so the ranks'
        parts of an epoch are disjoint and together the whole set once. Dynamic binarization
        draws the uniforms of the whole global minibatch and keeps this rank's rows: the same
        numbers as one process, and the generators of all ranks stay equal.
        """
        _check_batch_args(batch_size, generator, self.device)
        n = self.train.shape[0]
        perm = torch.randperm(n, generator=generator, device=self.device)
        steps = [(start, min(start + batch_size, n)) for start in range(0, n, batch_size)]
        bounds = [part_bounds(stop - start, self.rank, self.world_size) for start, stop in steps]
        index = torch.cat([perm[start + lo : start + hi]
                           for (start, _), (lo, hi) in zip(steps, bounds, strict=True)])
        rows = self.train.index_select(0, index.to(self.train.device)).to(self.device)
        offset = 0
        for (start, stop), (lo, hi) in zip(steps, bounds, strict=True):
            x = rows[offset : offset + hi - lo]
            offset += hi - lo
            if self.binarize == "dynamic":
                u = torch.rand((stop - start, *self.x_shape), generator=generator,
                               device=self.device, dtype=x.dtype)
                x = (u[lo:hi] < x).to(x.dtype)
            yield RankBatch(x, lo, hi, stop - start)


def shard(splits: Splits, rank: int, world_size: int,
          device: str | torch.device) -> ShardedSplits:
    """``rank``'s :class:`ShardedSplits` of ``splits`` (loaded in host memory) for ``device``."""
    dev = _device(device)

    def rows(x: torch.Tensor) -> torch.Tensor:
        parts = [x[start + lo : start + hi]
                 for start, lo, hi, _ in chunk_parts(x.shape[0], rank, world_size)]
        return torch.cat(parts).to(dev)

    return ShardedSplits(
        name=splits.name, binarize=splits.binarize, train=splits.train.cpu(),
        valid=rows(splits.valid), test=rows(splits.test),
        test_binarization=splits.test_binarization, rank=rank, world_size=world_size,
        num_valid=splits.valid.shape[0], num_test=splits.test.shape[0],
        full_test=splits.test.cpu(),
    )


# --------------------------------------------------------------------------------------------
# splitting


def n_valid(valid_size: float | None, n: int, default: int, what: str) -> int:
    """Number of validation examples held out of ``n`` official training examples."""
    if valid_size is None:
        k = default
    elif isinstance(valid_size, float):
        k = max(1, round(valid_size * n))
    else:
        k = valid_size
    if k >= n:
        raise PyrovaeError(
            f"valid_size={k} leaves no training examples: {what} has {n} training examples; "
            "choose a smaller valid_size"
        )
    return k


def split_official(
    train: torch.Tensor, test: torch.Tensor, valid_size: float | None, default: int, what: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The last ``valid_size`` official training examples become the validation set."""
    k = n_valid(valid_size, train.shape[0], default, what)
    return train[:-k], train[-k:], test


def shuffle_split(
    x: torch.Tensor, valid_size: float | None, seed: int, source: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One fixed shuffle (seed ``seed``), then valid, test, train: for data without a test split."""
    n = x.shape[0]
    n_test = max(1, round(TEST_FRACTION * n))
    if valid_size is None:
        valid_size = DEFAULT_VALID_FRACTION
    n_valid = max(1, round(valid_size * n)) if isinstance(valid_size, float) else valid_size
    if n - n_valid - n_test < 1:
        raise PyrovaeError(
            f"{source} has {n} examples: too few for valid ({n_valid}) and test ({n_test}) sets "
            "plus training data; add examples or lower valid_size"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    x = x[perm]
    return x[n_valid + n_test :], x[:n_valid], x[n_valid : n_valid + n_test]


def apply_limit(train: torch.Tensor, limit: int | None) -> torch.Tensor:
    if limit is None or limit >= train.shape[0]:
        return train
    return train[:limit].clone()  # a copy, so the full training tensor can be freed


# --------------------------------------------------------------------------------------------
# load-time binarization


def binarize_at_load(
    binarize: str, train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, key: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Load-time binarization. Drawn on the CPU with fixed seeds so the binary valid/test sets
    are the same on every device and for every ``seed``; ``dynamic`` leaves train grey.
    Returns the three tensors and one sentence saying how the test set was binarized."""
    lo = min(float(t.min()) for t in (train, valid, test))
    hi = max(float(t.max()) for t in (train, valid, test))
    if binarize == "none":
        if 0.0 <= lo and hi <= 1.0:
            return train, valid, test, "none: grey levels in [0, 1]"
        return train, valid, test, f"none: raw values as loaded, in [{lo:.4g}, {hi:.4g}]"
    if lo < 0.0 or hi > 1.0:
        raise PyrovaeError(
            f"{key} data lie in [{lo:.4g}, {hi:.4g}], but binarize={binarize} needs values in "
            "[0, 1] (probabilities): rescale the data to [0, 1] or use binarize=none"
        )

    def draw(t: torch.Tensor, seed: int) -> torch.Tensor:
        return torch.bernoulli(t, generator=torch.Generator().manual_seed(seed))

    valid = draw(valid, VALID_BINARIZATION_SEED)
    test = draw(test, TEST_BINARIZATION_SEED)
    if binarize == "static":
        train = draw(train, TRAIN_BINARIZATION_SEED)
        sentence = (
            "static stochastic binarization of the grey levels, drawn once at load with fixed "
            f"seeds (test seed {TEST_BINARIZATION_SEED}) for train, valid and test alike"
        )
    else:
        sentence = (
            "stochastic binarization of the grey levels, drawn once with seed "
            f"{TEST_BINARIZATION_SEED} (as in Burda et al. 2015)"
        )
    return train, valid, test, sentence
