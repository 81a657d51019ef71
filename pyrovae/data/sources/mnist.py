"""MNIST and its look-alikes: torchvision classes whose ``resources`` are gzipped IDX files in
``<Class>/raw`` (train/t10k images and labels, 28 x 28 grey levels)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from pyrovae.data.sources.base import Fake, TorchvisionSource, images_to_float, md5_of


class IdxSource(TorchvisionSource):
    """A torchvision MNIST-like class: ``resources`` lists (file name, md5) of gzipped IDX files,
    downloaded into and extracted in ``root/<Class>/raw``."""

    def folder(self) -> str:
        return f"{self.torchvision_name}/raw"

    def files(self) -> list[tuple[str, str | None]]:
        return [(name, md5) for name, md5 in self.dataset().resources]

    def extracted(self) -> list[str]:
        return [name.removesuffix(".gz") for name, _ in self.files()]

    @classmethod
    def write_fake(cls, where: Path, rng: np.random.Generator) -> Fake:
        sizes = {"train": 12, "t10k": 5}
        images = {k: rng.integers(0, 256, (n, 28, 28), dtype=np.uint8) for k, n in sizes.items()}
        folder = where / cls().folder()
        folder.mkdir(parents=True, exist_ok=True)
        resources = []
        for name, _ in cls.dataset().resources:
            split = "train" if name.startswith("train") else "t10k"
            array = images[split] if "images" in name else rng.integers(0, 10, sizes[split])
            payload = gzip.compress(idx_bytes(array.astype(np.uint8)), mtime=0)
            (folder / name).write_bytes(payload)
            resources.append((name, md5_of(payload)))
        examples = images_to_float(torch.from_numpy(np.concatenate(list(images.values()))))
        return Fake(
            examples=examples,
            sizes=(9, 3, 5),
            ordered=True,
            kwargs={"valid_size": 3},
            patches=((cls.dataset(), "resources", resources),),
        )


def idx_bytes(array: np.ndarray) -> bytes:
    """A uint8 array in the IDX format of LeCun's MNIST files."""
    header = bytes([0, 0, 0x08, array.ndim])
    return header + b"".join(int(d).to_bytes(4, "big") for d in array.shape) + array.tobytes()


class MNIST(IdxSource):
    name = "mnist"
    torchvision_name = "MNIST"


class FashionMNIST(IdxSource):
    name = "fashion_mnist"
    torchvision_name = "FashionMNIST"


class KMNIST(IdxSource):
    """Kuzushiji-MNIST (Clanuwat et al. 2018): cursive Japanese characters, MNIST's format."""

    name = "kmnist"
    torchvision_name = "KMNIST"
