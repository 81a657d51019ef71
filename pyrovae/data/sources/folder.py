"""A folder of images (``data.name=folder``, ``data.path``): every image under it, recursively."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pyrovae.data.checks import short
from pyrovae.data.sources.base import Fake, PathSource, Raw, images_to_float
from pyrovae.errors import PyrovaeError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
IMAGE_SUFFIXES += (".pgm", ".pbm")

_GREY_MODES = {"1": "L", "L": "L", "LA": "L"}
_RGB_MODES = {"RGB": "RGB", "RGBA": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


class ImageFolder(PathSource):
    """All images under ``path`` (recursive, sorted, hidden files skipped) as float32 (N, C, H, W).

    Grey images (modes 1, L, LA) give C=1, colour images (RGB, RGBA, P, ...) C=3; an alpha
    channel is dropped. All images must share one size and channel count.
    """

    name = "folder"
    path_kind = "folder of images"

    def read(self, path: str | Path) -> Raw:
        from PIL import Image, UnidentifiedImageError

        folder = self.existing(path)
        if not folder.is_dir():
            raise PyrovaeError(
                f"data.path {folder} is not a folder: data.name=folder needs a folder of images "
                "(use data.name=npy for a .npy file)"
            )
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise PyrovaeError(
                f"no images in {folder}: put image files ({', '.join(IMAGE_SUFFIXES)}) in it or "
                "its subfolders"
            )
        array: np.ndarray | None = None
        first = ""
        for i, file in enumerate(files):  # one decode per file: unavoidable I/O
            try:
                with Image.open(file) as im:
                    mode = _GREY_MODES.get(im.mode) or _RGB_MODES.get(im.mode)
                    if mode is None:
                        raise PyrovaeError(
                            f"{file} has image mode {im.mode} (e.g. 16-bit or float pixels): "
                            "save the images as 8-bit grey (L) or RGB"
                        )
                    converted = im.convert(mode) if im.mode != mode else im
                    pixels = np.asarray(converted, dtype=np.uint8)
            except PyrovaeError:
                raise
            except (UnidentifiedImageError, OSError, ValueError) as e:
                raise PyrovaeError(
                    f"cannot read image {file} ({short(e)}): remove or replace it"
                ) from None
            if pixels.ndim == 2:
                pixels = pixels[:, :, None]
            if array is None:
                array = np.empty((len(files), *pixels.shape), dtype=np.uint8)
                first = str(file.relative_to(folder))
            elif pixels.shape != array.shape[1:]:
                h, w, c = array.shape[1:]
                h2, w2, c2 = pixels.shape
                raise PyrovaeError(
                    f"images in {folder} differ in shape (C x H x W): {first} is {c}x{h}x{w} but "
                    f"{file.relative_to(folder)} is {c2}x{h2}x{w2}; resize (and convert) them "
                    "all to one size and mode first"
                )
            array[i] = pixels
        x = torch.from_numpy(array).permute(0, 3, 1, 2)
        return Raw(train=images_to_float(x), origin=str(folder))

    @classmethod
    def write_fake(cls, where: Path, rng: np.random.Generator) -> Fake:
        from PIL import Image

        folder = where / "images"
        (folder / "sub").mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (20, 6, 8), dtype=np.uint8)
        for i, p in enumerate(pixels):
            Image.fromarray(p, mode="L").save(folder / ("sub" if i % 2 else "") / f"{i:02d}.png")
        examples = images_to_float(torch.from_numpy(pixels))
        return Fake(examples, sizes=(16, 2, 2), ordered=False, kwargs={"path": str(folder)})
