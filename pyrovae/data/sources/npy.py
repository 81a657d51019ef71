"""One ``.npy`` array (``data.name=npy``, ``data.path``), shape (N, C, H, W) or (N, D)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyrovae.data.checks import short
from pyrovae.data.sources.base import Fake, PathSource, Raw
from pyrovae.errors import PyrovaeError


class NpyFile(PathSource):
    """A ``.npy`` array as float32: floats as they are, 0/1 or 0..255 integers scaled to [0, 1]."""

    name = "npy"
    path_kind = ".npy file of shape (N, C, H, W) or (N, D)"

    def read(self, path: str | Path) -> Raw:
        file = self.existing(path)
        if not file.is_file():
            raise PyrovaeError(
                f"data.path {file} is not a file: data.name=npy needs a .npy file "
                "(use data.name=folder for a folder of images)"
            )
        try:
            array = np.load(file, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise PyrovaeError(
                f"cannot read {file} as a .npy array ({short(e)}): save it with numpy.save"
            ) from None
        if not isinstance(array, np.ndarray):
            raise PyrovaeError(f"{file} is not a single .npy array: save one array with numpy.save")
        if array.ndim not in (2, 4):
            raise PyrovaeError(
                f"{file} has shape {tuple(array.shape)}; accepted shapes are (N, C, H, W) for "
                "images and (N, D) for vectors"
            )
        kind = array.dtype.kind
        if kind == "b":
            x = torch.from_numpy(array.astype(np.float32))
        elif kind in "iu":
            lo, hi = (int(array.min()), int(array.max())) if array.size else (0, 0)
            if lo < 0 or hi > 255:
                raise PyrovaeError(
                    f"{file} holds integers in [{lo}, {hi}]; integer data must be 0..255 (8-bit "
                    "grey levels) or 0/1: rescale it, or save it as floats"
                )
            x = torch.from_numpy(array.astype(np.float32))
            if hi > 1:
                x.div_(255.0)
        elif kind == "f":
            bad = int(array.size - np.count_nonzero(np.isfinite(array)))
            if bad:
                raise PyrovaeError(
                    f"{file} has {bad} non-finite values (NaN or inf): replace or drop them"
                )
            x = torch.from_numpy(array.astype(np.float32))
        else:
            raise PyrovaeError(
                f"{file} has dtype {array.dtype}; it must hold floats or integers: convert it"
            )
        return Raw(train=x.contiguous(), origin=str(file))

    @classmethod
    def write_fake(cls, where: Path, rng: np.random.Generator) -> Fake:
        x = rng.random((30, 5), dtype=np.float32)
        file = where / "x.npy"
        np.save(file, x)
        examples = torch.from_numpy(x)
        return Fake(examples, sizes=(24, 3, 3), ordered=False, kwargs={"path": str(file)})
