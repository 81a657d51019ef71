"""Datasets as device tensors: load once, split, binarize, and slice minibatches on the device.

Every dataset ends up as three float32 tensors ``train``/``valid``/``test`` of shape
``(N, *x_shape)`` that live on one device; minibatches are index slices of those tensors, so
there is no ``DataLoader`` and no Python loop over examples.

Files are looked for in a cache folder ``root`` (default :func:`default_root`). A read-only
*mirror* (``mirror=`` or the ``PYROVAE_DATA_MIRROR`` environment variable) holding the original
files (``MNIST/raw/*.gz``, ``FashionMNIST/raw/*.gz``, ``CIFAR10/cifar-10-python.tar.gz``,
``binarized_mnist/*.amat.gz``) is copied into ``root`` (md5-checked where torchvision knows the
md5, atomically) and never written to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import os
import pickle
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pyrovae.errors import PyrovaeError, choice_error
from pyrovae.files import atomic_write

DATASETS = ("mnist", "fashion_mnist", "cifar10", "binarized_mnist", "folder", "npy")
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

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
IMAGE_SUFFIXES += (".pgm", ".pbm")

_AMAT_SPLITS = ("train", "valid", "test")
_AMAT_PIXELS = 28 * 28
_AMAT_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
#: What torchvision raises when a download fails or extracted files are unreadable.
_LOAD_ERRORS = (
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
_MIRROR_HINT = "set data.mirror (or PYROVAE_DATA_MIRROR) to a folder holding"


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
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise PyrovaeError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise PyrovaeError(
                f"generator must be a torch.Generator, got {type(generator).__name__}; "
                f"make one with torch.Generator(device={str(self.device)!r}).manual_seed(seed)"
            )
        if generator.device.type != self.device.type:
            raise PyrovaeError(
                f"the generator is on {generator.device} but the data are on {self.device}: "
                f"make it with torch.Generator(device={str(self.device)!r})"
            )
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


def resolve_mirror(mirror: str | None) -> Path | None:
    """``mirror`` if given, else the ``PYROVAE_DATA_MIRROR`` env var, else None.

    Relative paths resolve against the current working directory. A mirror path that does not
    exist -> PyrovaeError.
    """
    source = "data.mirror"
    if mirror is None or str(mirror) == "":
        mirror = os.environ.get("PYROVAE_DATA_MIRROR") or None
        source = "PYROVAE_DATA_MIRROR"
    if mirror is None:
        return None
    path = Path(mirror).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    if not path.exists():
        raise PyrovaeError(
            f"data mirror {path} (from {source}) does not exist: point {source} at the folder "
            "holding MNIST/raw/*.gz etc., or unset it"
        )
    if not path.is_dir():
        raise PyrovaeError(f"data mirror {path} (from {source}) is not a folder: point it at one")
    return path


def default_root() -> Path:
    """The cache folder: ``$XDG_CACHE_HOME/pyrovae/data``, by default ``~/.cache/pyrovae/data``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "pyrovae" / "data"


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
    seed: seed of the one fixed shuffle of folder/npy data before splitting.
    device: where the three tensors live; they are moved there once.

    binarized_mnist is already binary: binarize may be 'static' or 'none' (the data are used
    as they are and ``Splits.binarize`` is 'static'); 'dynamic' is an error. The load-time
    draws use fixed seeds on the CPU, so the binary valid/test sets are the same on every
    device and for every ``seed``.
    """
    key = _dataset_name(name)
    binarize = _binarize_name(binarize)
    limit = _check_limit(limit)
    _check_valid_size(valid_size)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise PyrovaeError(f"seed must be an integer, got {seed!r}")
    dev = _device(device)
    if key in ("folder", "npy"):
        if path is None or str(path) == "":
            raise PyrovaeError(f"data.name={key} needs data.path: the {_path_kind(key)} to load")
    elif path is not None:
        raise PyrovaeError(
            f"data.path is only used with data.name=folder or npy, not {key}: drop data.path"
        )

    if key == "binarized_mnist":
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
        mirror_dir = resolve_mirror(mirror)
        train, valid, test = _load_binarized_mnist(_root(root, mirror_dir), mirror_dir)
        train = _apply_limit(train, limit)
        return Splits(
            name=key,
            binarize="static",
            train=train.to(dev),
            valid=valid.to(dev),
            test=test.to(dev),
            test_binarization="static binarization of Larochelle & Murray (2011)",
        )

    if key in ("mnist", "fashion_mnist", "cifar10"):
        mirror_dir = resolve_mirror(mirror)
        full_train, test = _load_torchvision(key, _root(root, mirror_dir), mirror_dir)
        n_valid = _n_valid(valid_size, full_train.shape[0], DEFAULT_VALID, key)
        train, valid = full_train[:-n_valid], full_train[-n_valid:]
    else:
        x, source = _load_folder(path) if key == "folder" else _load_npy(path)
        train, valid, test = _shuffle_split(x, valid_size, seed, source)
    train = _apply_limit(train, limit)
    train, valid, test, sentence = _binarize(binarize, train, valid, test, key)
    return Splits(
        name=key,
        binarize=binarize,
        train=train.to(dev),
        valid=valid.to(dev),
        test=test.to(dev),
        test_binarization=sentence,
    )


# --------------------------------------------------------------------------------------------
# argument checks


def _dataset_name(name: object) -> str:
    key = name.strip().lower().replace("-", "_") if isinstance(name, str) else name
    if key not in DATASETS:
        raise choice_error("dataset", name, DATASETS)
    return key


def _binarize_name(binarize: object) -> str:
    key = binarize.strip().lower() if isinstance(binarize, str) else binarize
    if key not in BINARIZE:
        raise choice_error("binarize value", binarize, BINARIZE)
    return key


def _check_limit(limit: object) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise PyrovaeError(
            f"limit must be a positive integer (number of training examples), got {limit!r}"
        )
    return limit


def _check_valid_size(valid_size: object) -> None:
    if valid_size is None:
        return
    if isinstance(valid_size, bool) or not isinstance(valid_size, (int, float)):
        raise PyrovaeError(
            f"valid_size must be a number of examples (int >= 1) or a fraction (float in (0, 1)), "
            f"got {valid_size!r}"
        )
    if isinstance(valid_size, int) and valid_size < 1:
        raise PyrovaeError(f"valid_size must be at least 1, got {valid_size}")
    if isinstance(valid_size, float) and not 0.0 < valid_size < 1.0:
        raise PyrovaeError(
            f"a fractional valid_size must lie strictly between 0 and 1, got {valid_size}; "
            "give an int for a number of examples"
        )


def _n_valid(valid_size: float | None, n: int, default: int, what: str) -> int:
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


def _apply_limit(train: torch.Tensor, limit: int | None) -> torch.Tensor:
    if limit is None or limit >= train.shape[0]:
        return train
    return train[:limit].clone()  # a copy, so the full training tensor can be freed


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as e:
        raise PyrovaeError(
            f"unknown device {device!r} ({_short(e)}): use e.g. device=cpu or device=cuda"
        ) from None
    try:
        torch.empty(0, device=dev)
    except (RuntimeError, AssertionError) as e:
        raise PyrovaeError(
            f"device {device!r} is not usable here ({_short(e)}): use device=cpu"
        ) from None
    return dev


def _path_kind(key: str) -> str:
    return "folder of images" if key == "folder" else ".npy file of shape (N, C, H, W) or (N, D)"


def _short(exc: BaseException, width: int = 160) -> str:
    """The last non-empty line of an exception message, shortened: for one-line errors."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    return text if len(text) <= width else text[: width - 3] + "..."


# --------------------------------------------------------------------------------------------
# cache folder and mirror


def _root(root: str | Path | None, mirror_dir: Path | None) -> Path:
    """The cache folder, created; it must not lie inside the read-only mirror."""
    path = default_root() if root is None or str(root) == "" else Path(root).expanduser()
    path = path.absolute()
    if mirror_dir is not None:
        r, m = path.resolve(), mirror_dir.resolve()
        if r == m or m in r.parents:
            raise PyrovaeError(
                f"data root {path} lies inside the read-only data mirror {mirror_dir}: "
                "choose a root outside the mirror (the mirror is only read and copied from)"
            )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PyrovaeError(
            f"cannot create the data root {path} ({_short(e)}): set data.root to a writable folder"
        ) from None
    return path


def _atomic_copy(src: Path, dst: Path, md5: str | None = None) -> None:
    """Copy ``src`` to ``dst`` atomically; with ``md5``, the copy is checked before it replaces
    anything (a mismatch -> PyrovaeError naming ``src``)."""
    from torchvision.datasets.utils import calculate_md5

    def write(tmp: Path) -> None:
        shutil.copyfile(src, tmp)
        got = None if md5 is None else calculate_md5(tmp)
        if got != md5:
            raise PyrovaeError(
                f"{src} has md5 {got}, not the md5 {md5} that torchvision expects: the "
                "file is corrupt or a different version; replace it with the original file"
            )

    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dst, write)


def _atomic_save_npy(array: np.ndarray, dst: Path) -> None:
    atomic_write(dst, lambda tmp: np.save(tmp, array, allow_pickle=False))


# --------------------------------------------------------------------------------------------
# torchvision datasets: mnist, fashion_mnist, cifar10


def _load_torchvision(key: str, root: Path, mirror: Path | None) -> tuple[torch.Tensor, ...]:
    """(official train, official test) as float32 in [0, 1], shape (N, C, H, W), on the CPU."""
    if key == "cifar10":
        return _load_cifar10(root, mirror)
    from torchvision import datasets

    cls = datasets.MNIST if key == "mnist" else datasets.FashionMNIST
    folder = cls.__name__
    raw = root / folder / "raw"
    names = [fname for fname, _ in cls.resources]
    extracted = all((raw / fname[: -len(".gz")]).is_file() for fname in names)
    not_in_mirror = []
    if mirror is not None and not extracted:
        for fname, md5 in cls.resources:
            dst = raw / fname
            if dst.is_file() and _md5_ok(dst, md5):
                continue
            src = mirror / folder / "raw" / fname
            if src.is_file():
                _atomic_copy(src, dst, md5)
            else:
                not_in_mirror.append(f"{folder}/raw/{fname}")

    def missing() -> bool:
        return not all((raw / fname[: -len(".gz")]).is_file() for fname in names)

    try:
        train = cls(str(root), train=True, download=True)
        test = cls(str(root), train=False, download=True)
    except PyrovaeError:
        raise
    except _LOAD_ERRORS as e:  # download failure (URLError, RuntimeError) or unreadable files
        if missing():
            note = (
                f" (the mirror {mirror} has no {', '.join(not_in_mirror)})" if not_in_mirror else ""
            )
            raise PyrovaeError(
                f"{folder} is not in {raw} and could not be downloaded ({_short(e)}): put "
                f"{', '.join(names)} into {raw}, or {_MIRROR_HINT} {folder}/raw/*.gz{note}"
            ) from None
        raise PyrovaeError(
            f"could not read {folder} from {raw} ({_short(e)}): the files there are damaged "
            "(e.g. an interrupted extraction); delete that folder and load again"
        ) from None
    return _images_to_float(train.data), _images_to_float(test.data)


def _load_cifar10(root: Path, mirror: Path | None) -> tuple[torch.Tensor, torch.Tensor]:
    from torchvision import datasets

    cls = datasets.CIFAR10
    folder = root / "CIFAR10"
    batches = folder / cls.base_folder
    listed = [fname for fname, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]
    extracted = all((batches / fname).is_file() for fname in listed)
    note = ""
    if mirror is not None and not extracted:
        dst = folder / cls.filename
        src = mirror / "CIFAR10" / cls.filename
        if not (dst.is_file() and _md5_ok(dst, cls.tgz_md5)):
            if src.is_file():
                _atomic_copy(src, dst, cls.tgz_md5)
            else:
                note = f" (the mirror {mirror} has no CIFAR10/{cls.filename})"
    try:
        train = cls(str(folder), train=True, download=True)
        test = cls(str(folder), train=False, download=True)
    except PyrovaeError:
        raise
    except _LOAD_ERRORS as e:
        if not all((batches / fname).is_file() for fname in listed):
            raise PyrovaeError(
                f"CIFAR10 is not in {folder} and could not be downloaded ({_short(e)}): put "
                f"{cls.filename} into {folder}, or {_MIRROR_HINT} CIFAR10/{cls.filename}{note}"
            ) from None
        raise PyrovaeError(
            f"could not read CIFAR10 from {batches} ({_short(e)}): the files there are damaged; "
            "delete that folder and load again"
        ) from None
    # torchvision keeps CIFAR as uint8 (N, H, W, C) numpy arrays
    return _images_to_float(_nhwc(train.data)), _images_to_float(_nhwc(test.data))


def _nhwc(array: np.ndarray) -> torch.Tensor:
    """uint8 (N, H, W, C) numpy -> (N, C, H, W) tensor view."""
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)


def _md5_ok(path: Path, md5: str) -> bool:
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


def _images_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W) or (N, C, H, W) -> contiguous float32 (N, C, H, W) in [0, 1]."""
    if images.dim() == 3:
        images = images.unsqueeze(1)
    return images.to(torch.float32).div_(255.0).contiguous()


# --------------------------------------------------------------------------------------------
# binarized_mnist (Larochelle & Murray 2011)


def _load_binarized_mnist(root: Path, mirror: Path | None) -> tuple[torch.Tensor, ...]:
    folder = root / "binarized_mnist"
    arrays, missing = {}, []
    for split in _AMAT_SPLITS:
        array = _amat_split(folder, mirror, split)
        if array is None:
            missing.append(f"binarized_mnist_{split}.amat.gz")
        arrays[split] = array
    if missing:
        raise PyrovaeError(
            f"binarized_mnist is not in {folder} and there is no official download to fetch it "
            f"from: put {', '.join(missing)} into {folder} (plain .amat files work too; they were "
            f"first published at {_AMAT_URL}), or {_MIRROR_HINT} binarized_mnist/*.amat.gz"
        )
    return tuple(
        torch.from_numpy(arrays[s]).to(torch.float32).reshape(-1, 1, 28, 28) for s in _AMAT_SPLITS
    )


def _amat_split(folder: Path, mirror: Path | None, split: str) -> np.ndarray | None:
    """One split as uint8 (N, 784), from the .npy cache, the root's .amat(.gz), or the mirror."""
    base = f"binarized_mnist_{split}"
    cache = folder / f"{base}.npy"
    sources = [folder / f"{base}.amat.gz", folder / f"{base}.amat"]
    source = next((p for p in sources if p.is_file()), None)
    if cache.is_file() and (source is None or cache.stat().st_mtime >= source.stat().st_mtime):
        with contextlib.suppress(ValueError, OSError, EOFError):
            array = np.load(cache, allow_pickle=False)
            if array.dtype == np.uint8 and array.ndim == 2 and array.shape[1] == _AMAT_PIXELS:
                return array
    if source is None and mirror is not None:
        for name in (f"{base}.amat.gz", f"{base}.amat"):
            src = mirror / "binarized_mnist" / name
            if src.is_file():
                source = folder / name
                _atomic_copy(src, source)
                break
    if source is None:
        return None
    array = _parse_amat(source)
    _atomic_save_npy(array, cache)
    return array


def _parse_amat(source: Path) -> np.ndarray:
    """Rows of 784 space-separated 0/1 values -> uint8 (N, 784), without a per-value loop."""
    try:
        if source.suffix == ".gz":
            with gzip.open(source, "rb") as f:
                raw = f.read()
        else:
            raw = source.read_bytes()
    except (OSError, EOFError) as e:
        raise PyrovaeError(
            f"cannot read {source} ({_short(e)}): replace it with the original file"
        ) from None
    buf = np.frombuffer(raw, dtype=np.uint8)
    width = 2 * _AMAT_PIXELS  # "d d d ... d\n": two bytes per value
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
    if n_lines == 0 or digits.size != n_lines * _AMAT_PIXELS:
        raise PyrovaeError(
            f"{source} does not hold rows of {_AMAT_PIXELS} values ({digits.size} values on "
            f"{n_lines} lines): replace it with the original file"
        )
    return np.ascontiguousarray(digits.reshape(n_lines, _AMAT_PIXELS))


# --------------------------------------------------------------------------------------------
# folder of images, .npy file


def _existing_path(path: str | Path, key: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise PyrovaeError(f"data.path {p} does not exist: point it at the {_path_kind(key)}")
    return p


_GREY_MODES = {"1": "L", "L": "L", "LA": "L"}
_RGB_MODES = {"RGB": "RGB", "RGBA": "RGB", "P": "RGB", "PA": "RGB", "CMYK": "RGB", "YCbCr": "RGB"}


def _load_folder(path: str | Path) -> tuple[torch.Tensor, str]:
    """All images under ``path`` (recursive, sorted, hidden files skipped) as float32 (N, C, H, W).

    Grey images (modes 1, L, LA) give C=1, colour images (RGB, RGBA, P, ...) C=3; an alpha
    channel is dropped. All images must share one size and channel count.
    """
    from PIL import Image, UnidentifiedImageError

    folder = _existing_path(path, "folder")
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
            f"no images in {folder}: put image files ({', '.join(IMAGE_SUFFIXES)}) in it or its "
            "subfolders"
        )
    array: np.ndarray | None = None
    first = ""
    for i, file in enumerate(files):  # one decode per file: unavoidable I/O, no per-pixel work
        try:
            with Image.open(file) as im:
                mode = _GREY_MODES.get(im.mode) or _RGB_MODES.get(im.mode)
                if mode is None:
                    raise PyrovaeError(
                        f"{file} has image mode {im.mode} (e.g. 16-bit or float pixels): save "
                        "the images as 8-bit grey (L) or RGB"
                    )
                pixels = np.asarray(im.convert(mode) if im.mode != mode else im, dtype=np.uint8)
        except PyrovaeError:
            raise
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise PyrovaeError(
                f"cannot read image {file} ({_short(e)}): remove or replace it"
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
                f"{file.relative_to(folder)} is {c2}x{h2}x{w2}; resize (and convert) them all to "
                "one size and mode first"
            )
        array[i] = pixels
    x = torch.from_numpy(array).permute(0, 3, 1, 2)
    return _images_to_float(x), str(folder)


def _load_npy(path: str | Path) -> tuple[torch.Tensor, str]:
    """A ``.npy`` array, shape (N, C, H, W) or (N, D), as float32 (integers > 1 scaled by 1/255)."""
    file = _existing_path(path, "npy")
    if not file.is_file():
        raise PyrovaeError(
            f"data.path {file} is not a file: data.name=npy needs a .npy file "
            "(use data.name=folder for a folder of images)"
        )
    try:
        array = np.load(file, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise PyrovaeError(
            f"cannot read {file} as a .npy array ({_short(e)}): save it with numpy.save"
        ) from None
    if not isinstance(array, np.ndarray):
        raise PyrovaeError(f"{file} is not a single .npy array: save one array with numpy.save")
    if array.ndim not in (2, 4):
        raise PyrovaeError(
            f"{file} has shape {tuple(array.shape)}; accepted shapes are (N, C, H, W) for images "
            "and (N, D) for vectors"
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
    return x.contiguous(), str(file)


def _shuffle_split(
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


# --------------------------------------------------------------------------------------------
# binarization


def _binarize(
    binarize: str, train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, key: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """Load-time binarization. Drawn on the CPU with fixed seeds so the binary valid/test sets
    are the same on every device and for every ``seed``; ``dynamic`` leaves train grey."""
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
