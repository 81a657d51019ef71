"""What a data source is: a small class that names its files (and their md5s) or its reader,
and produces float32 arrays; :func:`pyrovae.data.load_data` does the rest (cache, splits,
binarization, device) the same way for every source.

Three kinds:

- :class:`TorchvisionSource`: a torchvision dataset class declares the files, md5s and URLs;
  one generic path copies them from the mirror (md5-checked, atomically) and lets torchvision
  download, check and extract what is still missing. A new one is a short class naming the
  torchvision class, plus a line in the registry (``pyrovae.data.sources``).
- :class:`CachedSource`: any other dataset whose files live in the cache folder and mirror.
- :class:`PathSource`: the user's own data at ``data.path``.

Every source also says how to write a small fake copy of its files (:meth:`Source.write_fake`),
so that one contract test runs over every registered source without network or real data.
"""

from __future__ import annotations

import hashlib
import pickle
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from pyrovae.data.cache import atomic_copy, md5_ok, mirror_hint
from pyrovae.data.checks import short
from pyrovae.data.splits import DEFAULT_VALID
from pyrovae.errors import PyrovaeError

#: What torchvision raises when a download fails or extracted files are unreadable.
LOAD_ERRORS = (
    RuntimeError,
    OSError,
    ValueError,
    EOFError,
    AssertionError,
    IndexError,
    KeyError,
    tarfile.TarError,
    pickle.UnpicklingError,
)


@dataclass(frozen=True)
class Raw:
    """What a source produces: float32 tensors ``(N, *x_shape)`` on the CPU.

    ``test`` None: the data have no official split (shuffled once, then split); ``valid`` None:
    the last training examples are held out for validation; all three: the files' own split.
    """

    train: torch.Tensor
    test: torch.Tensor | None = None
    valid: torch.Tensor | None = None
    origin: str = ""  # where the data came from, for messages


@dataclass(frozen=True)
class Fake:
    """A small fake copy of a source's files, for the contract tests (no network, no real data).

    examples: every example as load_data returns it with binarize=none, in the order train,
    valid, test when ``ordered`` (else load_data shuffles them before splitting).
    sizes: (train, valid, test) sizes load_data gives with ``kwargs``.
    kwargs: the arguments of load_data the fake needs (``valid_size``, ``path``).
    patches: (object, attribute, value): what the tests set so that the md5s the source
    declares (torchvision's) are those of the fake files.
    """

    examples: torch.Tensor
    sizes: tuple[int, int, int]
    ordered: bool
    kwargs: dict[str, Any] = field(default_factory=dict)
    patches: tuple[tuple[object, str, object], ...] = ()


class Source:
    """A dataset by name: produces :class:`Raw` arrays."""

    #: the ``data.name`` of the source
    name: ClassVar[str]
    #: whether the source reads ``data.path`` (else it reads the cache folder and mirror)
    needs_path: ClassVar[bool] = False
    #: for data that are binary as published, how they were binarized (one sentence): then
    #: binarize must be static or none and the data are used as they are
    binarized: ClassVar[str | None] = None
    #: validation examples held out of an official training set when valid_size is not given
    default_valid: ClassVar[int] = DEFAULT_VALID

    def check(self, binarize: str, valid_size: float | None) -> None:
        """Reject arguments that do not apply to this source (one-line PyrovaeError)."""

    @classmethod
    def write_fake(cls, where: Path, rng: np.random.Generator) -> Fake:
        """Write a small fake copy of the files (into the mirror ``where`` for cached sources,
        anywhere under ``where`` for path sources); say what load_data must return."""
        raise NotImplementedError(f"{cls.__name__} declares no fake files for the tests")


class CachedSource(Source):
    """Files in ``root/<folder>``, copied there from ``mirror/<folder>`` when missing."""

    def folder(self) -> str:
        """Folder of the files, relative to the cache root (and to the mirror)."""
        raise NotImplementedError

    def files(self) -> list[tuple[str, str | None]]:
        """(file name in :meth:`folder`, md5 or None) of every file the source needs."""
        raise NotImplementedError

    def load(self, root: Path, mirror: Path | None) -> Raw:
        raise NotImplementedError


class PathSource(Source):
    """The user's data at ``data.path``; no official split (shuffled once, then split)."""

    needs_path = True
    #: what ``data.path`` must name, for messages
    path_kind: ClassVar[str]

    def read(self, path: str | Path) -> Raw:
        raise NotImplementedError

    def existing(self, path: str | Path) -> Path:
        p = Path(path).expanduser()
        if not p.exists():
            raise PyrovaeError(f"data.path {p} does not exist: point it at the {self.path_kind}")
        return p


class TorchvisionSource(CachedSource):
    """A dataset declared by a torchvision class (files, md5s, URLs, reader).

    One path serves them all: the files missing from the cache are copied from the mirror
    (md5-checked, atomically); torchvision then downloads whatever is still missing (with
    internet), checks and extracts it, and reads it. Subclasses say where torchvision keeps
    the files and how its ``data`` array becomes images.
    """

    #: the class in ``torchvision.datasets``
    torchvision_name: ClassVar[str]

    @classmethod
    def dataset(cls) -> type:
        from torchvision import datasets

        return getattr(datasets, cls.torchvision_name)

    def extracted(self) -> list[str]:
        """Files (relative to :meth:`folder`) that exist once the download is extracted."""
        raise NotImplementedError

    def dataset_root(self, root: Path) -> Path:
        """The ``root`` argument of the torchvision class."""
        return root

    def images(self, data: Any) -> torch.Tensor:
        """torchvision's ``data`` array -> float32 (N, C, H, W) in [0, 1]."""
        return images_to_float(torch.as_tensor(data))

    def load(self, root: Path, mirror: Path | None) -> Raw:
        cls = self.dataset()
        title = self.torchvision_name
        folder = root / self.folder()
        files = self.files()

        def extracted() -> bool:
            return all((folder / name).is_file() for name in self.extracted())

        not_in_mirror = []
        if mirror is not None and not extracted():
            for name, md5 in files:
                dst = folder / name
                if dst.is_file() and md5_ok(dst, md5):
                    continue
                src = mirror / self.folder() / name
                if src.is_file():
                    atomic_copy(src, dst, md5)
                else:
                    not_in_mirror.append(f"{self.folder()}/{name}")
        try:
            train = cls(str(self.dataset_root(root)), train=True, download=True)
            test = cls(str(self.dataset_root(root)), train=False, download=True)
        except PyrovaeError:
            raise
        except LOAD_ERRORS as e:  # download failure (URLError, RuntimeError) or unreadable files
            if not extracted():
                names = [name for name, _ in files]
                note = f" (the mirror {mirror} has no {', '.join(not_in_mirror)})"
                raise PyrovaeError(
                    f"{title} is not in {folder} and could not be downloaded ({short(e)}): put "
                    f"{', '.join(names)} into {folder}, or "
                    f"{mirror_hint(f'{self.folder()}/{_pattern(names)}')}"
                    f"{note if not_in_mirror else ''}"
                ) from None
            raise PyrovaeError(
                f"could not read {title} from {folder} ({short(e)}): the files there are damaged "
                "(e.g. an interrupted extraction); delete that folder and load again"
            ) from None
        return Raw(train=self.images(train.data), test=self.images(test.data), origin=title)


def _pattern(names: list[str]) -> str:
    """``*.gz`` for several files of one kind, else the names."""
    suffixes = {"".join(Path(n).suffixes[-1:]) for n in names}
    if len(names) > 1 and len(suffixes) == 1 and "" not in suffixes:
        return "*" + suffixes.pop()
    return ", ".join(names)


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> contiguous float32 (N, C, H, W) in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255.0).contiguous()


def md5_of(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()
