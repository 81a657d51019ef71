"""Binarized MNIST of Larochelle & Murray (2011): three ``.amat`` text files, one per split, of
rows of 784 space-separated 0/1 values. No official download remains: the files come from the
mirror or are put into the cache by hand; their parse is cached as ``.npy``."""

from __future__ import annotations

import contextlib
import gzip
from pathlib import Path

import numpy as np
import torch

from pyrovae.data.cache import atomic_copy, atomic_save_npy, mirror_hint
from pyrovae.data.checks import short
from pyrovae.data.sources.base import CachedSource, Fake, Raw
from pyrovae.errors import PyrovaeError

SPLITS = ("train", "valid", "test")
PIXELS = 28 * 28
URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"


class BinarizedMNIST(CachedSource):
    """``root/binarized_mnist/binarized_mnist_{train,valid,test}.amat(.gz)``."""

    name = "binarized_mnist"
    binarized = "static binarization of Larochelle & Murray (2011)"

    def folder(self) -> str:
        return "binarized_mnist"

    def files(self) -> list[tuple[str, str | None]]:
        return [(f"binarized_mnist_{split}.amat.gz", None) for split in SPLITS]

    def check(self, binarize: str, valid_size: float | None) -> None:
        if binarize == "dynamic":
            raise PyrovaeError(
                "binarized_mnist is statically binarized (Larochelle & Murray 2011): use "
                "binarize=static, or data.name=mnist for dynamic binarization"
            )
        if valid_size is not None:
            raise PyrovaeError(
                "valid_size does not apply to binarized_mnist (its files have their own "
                "50000/10000/10000 split): drop valid_size"
            )

    def load(self, root: Path, mirror: Path | None) -> Raw:
        folder = root / self.folder()
        arrays, missing = {}, []
        for split in SPLITS:
            array = _amat_split(folder, mirror, split)
            if array is None:
                missing.append(f"binarized_mnist_{split}.amat.gz")
            arrays[split] = array
        if missing:
            raise PyrovaeError(
                f"binarized_mnist is not in {folder} and there is no official download to fetch "
                f"it from: put {', '.join(missing)} into {folder} (plain .amat files work too; "
                f"they were first published at {URL}), or "
                f"{mirror_hint('binarized_mnist/*.amat.gz')}"
            )
        train, valid, test = (
            torch.from_numpy(arrays[s]).to(torch.float32).reshape(-1, 1, 28, 28) for s in SPLITS
        )
        return Raw(train=train, valid=valid, test=test, origin=self.name)

    @classmethod
    def write_fake(cls, where: Path, rng: np.random.Generator) -> Fake:
        folder = where / cls().folder()
        folder.mkdir(parents=True, exist_ok=True)
        rows = {split: rng.integers(0, 2, (n, PIXELS)) for split, n in zip(SPLITS, (6, 3, 2))}
        for split, r in rows.items():
            text = "".join(" ".join(str(v) for v in row) + "\n" for row in r)
            payload = gzip.compress(text.encode(), mtime=0)
            (folder / f"binarized_mnist_{split}.amat.gz").write_bytes(payload)
        examples = torch.from_numpy(np.concatenate(list(rows.values()))).float()
        return Fake(examples=examples.reshape(-1, 1, 28, 28), sizes=(6, 3, 2), ordered=True)


def _amat_split(folder: Path, mirror: Path | None, split: str) -> np.ndarray | None:
    """One split as uint8 (N, 784), from the .npy cache, the root's .amat(.gz), or the mirror."""
    base = f"binarized_mnist_{split}"
    cache = folder / f"{base}.npy"
    sources = [folder / f"{base}.amat.gz", folder / f"{base}.amat"]
    source = next((p for p in sources if p.is_file()), None)
    if cache.is_file() and (source is None or cache.stat().st_mtime >= source.stat().st_mtime):
        with contextlib.suppress(ValueError, OSError, EOFError):
            array = np.load(cache, allow_pickle=False)
            if array.dtype == np.uint8 and array.ndim == 2 and array.shape[1] == PIXELS:
                return array
    if source is None and mirror is not None:
        for name in (f"{base}.amat.gz", f"{base}.amat"):
            src = mirror / "binarized_mnist" / name
            if src.is_file():
                source = folder / name
                atomic_copy(src, source)
                break
    if source is None:
        return None
    array = parse_amat(source)
    atomic_save_npy(array, cache)
    return array


def parse_amat(source: Path) -> np.ndarray:
    """Rows of 784 space-separated 0/1 values -> uint8 (N, 784), without a per-value loop."""
    try:
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as f:
                raw = f.read()
        else:
            raw = source.read_bytes()
    except (OSError, EOFError) as e:
        raise PyrovaeError(
            f"cannot read {source} ({short(e)}): replace it with the original file"
        ) from None
    buf = np.frombuffer(raw, dtype=np.uint8)
    width = 2 * PIXELS  # "d d d ... d\n": two bytes per value
    if buf.size and buf.size % width == 0:  # fast path: the exact published layout
        rows = buf.reshape(-1, width)
        digits = rows[:, 0::2] - np.uint8(ord("0"))
        spaces = (rows[:, 1:-1:2] == ord(" ")).all() and (rows[:, -1] == ord("\n")).all()
        if spaces and digits.max() <= 1:
            return np.ascontiguousarray(digits)
    allowed = np.zeros(256, dtype=bool)
    allowed[[ord(c) for c in "01 \t\r\n"]] = True
    if not allowed[buf].all():
        raise PyrovaeError(
            f"{source} holds characters other than 0, 1 and whitespace: it is not a binarized "
            "MNIST .amat file; replace it with the original file"
        )
    digits = buf[(buf == ord("0")) | (buf == ord("1"))] - np.uint8(ord("0"))
    n_lines = len(raw.strip().splitlines()) if raw.strip() else 0
    if n_lines == 0 or digits.size != n_lines * PIXELS:
        raise PyrovaeError(
            f"{source} does not hold rows of {PIXELS} values ({digits.size} values on "
            f"{n_lines} lines): replace it with the original file"
        )
    return np.ascontiguousarray(digits.reshape(n_lines, PIXELS))
