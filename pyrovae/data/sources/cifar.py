"""CIFAR-10: torchvision's ``CIFAR10`` downloads one tarball of pickled batches."""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pyrovae.data.sources.base import Fake, TorchvisionSource, images_to_float, md5_of


class CIFAR10(TorchvisionSource):
    """``root/CIFAR10/cifar-10-python.tar.gz``, extracted to ``cifar-10-batches-py/``."""

    name = "cifar10"
    torchvision_name = "CIFAR10"

    def folder(self) -> str:
        return "CIFAR10"

    def files(self) -> list[tuple[str, str | None]]:
        cls = self.dataset()
        return [(cls.filename, cls.tgz_md5)]

    def extracted(self) -> list[str]:
        cls = self.dataset()
        names = [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
        return [f"{cls.base_folder}/{name}" for name in names]

    def dataset_root(self, root: Path) -> Path:
        return root / self.folder()

    def images(self, data: Any) -> torch.Tensor:
        # torchvision keeps CIFAR as uint8 (N, H, W, C) numpy arrays
        x = torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2)
        return images_to_float(x)

    @classmethod
    def write_fake(cls, where: Path, rng: np.random.Generator) -> Fake:
        tv = cls.dataset()
        members, lists = {}, {"train_list": [], "test_list": []}
        for kind, listed in lists.items():
            for name, _ in getattr(tv, kind):
                data = rng.integers(0, 256, (3, 3072), dtype=np.uint8)
                members[name] = pickle.dumps({"data": data, "labels": [0, 1, 2]})
                listed.append([name, md5_of(members[name])])
        meta = tv.meta["filename"]
        members[meta] = pickle.dumps({tv.meta["key"]: [str(i) for i in range(10)]})
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, payload in members.items():
                info = tarfile.TarInfo(f"{tv.base_folder}/{name}")
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        folder = where / cls().folder()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / tv.filename).write_bytes(buffer.getvalue())
        rows = [pickle.loads(members[name])["data"] for name, _ in tv.train_list + tv.test_list]
        # CIFAR rows are 1024 red, 1024 green, 1024 blue values: (3, 32, 32) in R, G, B order
        examples = images_to_float(torch.from_numpy(np.concatenate(rows).reshape(-1, 3, 32, 32)))
        n_train, n_test = 3 * len(tv.train_list), 3 * len(tv.test_list)
        return Fake(
            examples=examples,
            sizes=(n_train - 4, 4, n_test),
            ordered=True,
            kwargs={"valid_size": 4},
            patches=(
                (tv, "tgz_md5", md5_of(buffer.getvalue())),
                (tv, "train_list", lists["train_list"]),
                (tv, "test_list", lists["test_list"]),
                (tv, "meta", {**tv.meta, "md5": md5_of(members[meta])}),
            ),
        )
