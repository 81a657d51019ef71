"""Tests of pyrovae.data on the real offline mirror (MNIST, FashionMNIST, binarized MNIST).

Every test here is marked ``real_data``: it needs the real files in the data mirror
(``../shared/data`` or ``PYROVAE_DATA_MIRROR``) and fails (never skips) when they are missing.
The sources' contract on fake files is in test_data_sources.py; minibatches in
test_data_splits.py; argument checks, npy and folders in test_data_inputs.py.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.datasets

from pyrovae.config import load_config
from pyrovae.data import load_data, resolve_mirror
from pyrovae.data.cache import env_mirror_missing
from pyrovae.fit import data_source
from tests.conftest import is_binary as _is_binary
from tests.conftest import one_line_error as _error

pytestmark = pytest.mark.real_data

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("PYROVAE_DATA_MIRROR") or REPO.parent / "shared" / "data").resolve()
MNIST_FILES = [name for name, _ in torchvision.datasets.MNIST.resources]


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder`` (and itself) -> (mode, size, mtime_ns)."""
    entries = [folder, *sorted(folder.rglob("*"))]
    return {
        str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in entries
    }


@pytest.fixture(scope="module")
def mirror() -> Path:
    assert (MIRROR / "MNIST" / "raw").is_dir(), (
        f"the data mirror {MIRROR} is missing: these tests need MNIST, FashionMNIST and "
        "binarized_mnist there (or set PYROVAE_DATA_MIRROR)"
    )
    return MIRROR


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory, mirror: Path) -> SimpleNamespace:
    """One cache root for the module: the three real datasets copied and loaded once."""
    root = tmp_path_factory.mktemp("pyrovae-data")
    before = _snapshot(mirror)
    mnist = load_data("mnist", root=root, mirror=str(mirror))
    fashion = load_data("fashion_mnist", root=root, mirror=str(mirror))
    binarized = load_data("binarized_mnist", root=root, mirror=str(mirror), binarize="static")
    return SimpleNamespace(
        root=root,
        mirror=mirror,
        before=before,
        after=_snapshot(mirror),
        mnist=mnist,
        fashion=fashion,
        binarized=binarized,
    )


# --------------------------------------------------------------------------------------------
# MNIST, FashionMNIST, binarized MNIST


def test_mnist_splits(cache: SimpleNamespace) -> None:
    s = cache.mnist
    assert (s.name, s.binarize) == ("mnist", "dynamic")
    assert s.train.shape == (50000, 1, 28, 28)
    assert s.valid.shape == (10000, 1, 28, 28)
    assert s.test.shape == (10000, 1, 28, 28)
    assert s.x_shape == (1, 28, 28)
    for t in (s.train, s.valid, s.test):
        assert t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
    # train keeps grey levels in [0, 1]; valid and test are binarized once
    assert float(s.train.min()) == 0.0 and float(s.train.max()) == 1.0
    assert not _is_binary(s.train)
    assert _is_binary(s.valid) and _is_binary(s.test)
    assert "123" in s.test_binarization and "\n" not in s.test_binarization
    # the grey levels are exactly torchvision's uint8 / 255, the first 50000 training images
    raw = torchvision.datasets.MNIST(str(cache.root), train=True).data
    assert torch.equal(s.train[:, 0], raw[:50000].float() / 255)
    # the binary valid set is a draw from the last 10000 training images
    grey = raw[50000:].float() / 255
    n = grey.numel()
    se = float(torch.sqrt((grey * (1 - grey)).sum())) / n
    assert abs(float(s.valid.mean()) - float(grey.mean())) < 5 * se


def test_mnist_cached_root_has_extracted_files(cache: SimpleNamespace) -> None:
    raw = cache.root / "MNIST" / "raw"
    for name in MNIST_FILES:
        assert (raw / name).is_file() and (raw / name[:-3]).is_file()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "temp files left behind"


def test_mirror_never_written(cache: SimpleNamespace) -> None:
    assert cache.before == cache.after
    # the cache holds copies, not links into the mirror
    for p in cache.root.rglob("*"):
        assert not p.is_symlink()
    assert _snapshot(cache.mirror) == cache.before


def test_limit_and_valid_size(cache: SimpleNamespace) -> None:
    s = load_data("mnist", root=cache.root, mirror=str(cache.mirror), limit=1000, valid_size=5000)
    assert (len(s.train), len(s.valid), len(s.test)) == (1000, 5000, 10000)
    assert torch.equal(s.train, cache.mnist.train[:1000])
    f = load_data("mnist", root=cache.root, limit=70000, valid_size=0.2, binarize="none")
    assert (len(f.train), len(f.valid), len(f.test)) == (48000, 12000, 10000)
    assert f.test_binarization.startswith("none")
    assert not _is_binary(f.test)


def test_test_set_binarization_is_fixed(cache: SimpleNamespace) -> None:
    """Another seed, valid size, and binarize mode: the binary test set stays the same."""
    s = load_data(
        "mnist", root=cache.root, mirror=str(cache.mirror), seed=99, valid_size=20000, limit=10
    )
    assert torch.equal(s.test, cache.mnist.test)
    static = load_data("mnist", root=cache.root, binarize="static", limit=2000)
    assert torch.equal(static.test, cache.mnist.test)
    assert _is_binary(static.train) and static.binarize == "static"
    assert "static" in static.test_binarization


def test_fashion_mnist(cache: SimpleNamespace) -> None:
    s = cache.fashion
    assert s.name == "fashion_mnist"
    assert (len(s.train), len(s.valid), len(s.test)) == (50000, 10000, 10000)
    assert s.x_shape == (1, 28, 28)
    assert 0.0 <= float(s.train.min()) and float(s.train.max()) <= 1.0
    assert not torch.equal(s.train[:100], cache.mnist.train[:100])
    # FashionMNIST is much brighter than MNIST on average
    assert float(s.train.mean()) > float(cache.mnist.train.mean()) + 0.1


def test_binarized_mnist(cache: SimpleNamespace) -> None:
    s = cache.binarized
    assert (s.name, s.binarize) == ("binarized_mnist", "static")
    assert (len(s.train), len(s.valid), len(s.test)) == (50000, 10000, 10000)
    assert s.x_shape == (1, 28, 28)
    for t in (s.train, s.valid, s.test):
        assert t.dtype == torch.float32 and _is_binary(t)
    assert 0.1 < float(s.train.mean()) < 0.16  # MNIST strokes: ~13% of the pixels are on
    assert "Larochelle" in s.test_binarization
    # the first rows match the text file, and the parse was cached as .npy in the root
    folder = cache.root / "binarized_mnist"
    with (cache.mirror / "binarized_mnist" / "binarized_mnist_test.amat.gz").open("rb") as f:
        first = gzip.decompress(f.read()).split(b"\n", 2)[:2]
    rows = torch.tensor([[float(v) for v in line.split()] for line in first])
    assert torch.equal(s.test[:2].reshape(2, 784), rows)
    for split in ("train", "valid", "test"):
        assert np.load(folder / f"binarized_mnist_{split}.npy").shape[1] == 784
    again = load_data("binarized_mnist", root=cache.root, binarize="none", limit=7)
    assert len(again.train) == 7 and torch.equal(again.test, s.test)


def _md5(t: torch.Tensor) -> str:
    return hashlib.md5(t.contiguous().numpy().tobytes()).hexdigest()[:12]


def test_splits_and_binarizations_are_those_of_earlier_versions(cache: SimpleNamespace) -> None:
    """Bit for bit the tensors of pyrovae before the data package (same splits, seeds and
    binarization), so that training and evaluation numbers do not move. A change here (or in
    torch's seeded generators) changes every reported ELBO."""
    s = cache.mnist
    assert [_md5(t) for t in (s.train, s.valid, s.test)] == [
        "ca8d87f7a84c",
        "595bc91a4202",
        "53742c61b27f",
    ]
    static = load_data("mnist", root=cache.root, binarize="static", limit=3000)
    assert _md5(static.train) == "1744e278a80d"
    f = cache.fashion
    assert [_md5(t) for t in (f.train, f.valid, f.test)] == [
        "901520697795",
        "55e80d1a8353",
        "0b41558864a9",
    ]
    b = cache.binarized
    assert [_md5(t) for t in (b.train[:100], b.valid, b.test)] == [
        "f259704466ad",
        "1b7d60ddc9b7",
        "b94e5a586e08",
    ]


def test_md5_mismatch_in_mirror(tmp_path: Path, mirror: Path) -> None:
    """A damaged copy of real MNIST: rejected by name, and the cache is left as it was."""
    fake = tmp_path / "mirror"
    (fake / "MNIST" / "raw").mkdir(parents=True)
    for name in MNIST_FILES:
        shutil.copyfile(mirror / "MNIST" / "raw" / name, fake / "MNIST" / "raw" / name)
    bad = fake / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    data = bytearray(bad.read_bytes())
    data[100] ^= 0xFF
    bad.write_bytes(bytes(data))
    root = tmp_path / "root"
    _error(load_data, "mnist", root=root, mirror=str(fake), match=(str(bad), "md5"))
    assert not root.exists(), "a failed load leaves no folders behind"


def test_binarized_mnist_rejects_dynamic_and_valid_size(cache: SimpleNamespace) -> None:
    _error(load_data, "binarized_mnist", root=cache.root, match=("binarize=static", "mnist"))
    _error(
        load_data,
        "binarized_mnist",
        root=cache.root,
        binarize="static",
        valid_size=100,
        match=("valid_size",),
    )


def test_mirror_from_env_var_and_relative_path(
    tmp_path: Path, mirror: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PYROVAE_DATA_MIRROR", str(mirror))
    assert resolve_mirror(None) == mirror
    s = load_data("binarized_mnist", root=tmp_path, binarize="static", limit=5)
    assert len(s.train) == 5 and len(s.test) == 10000
    monkeypatch.chdir(mirror.parent)
    monkeypatch.setenv("PYROVAE_DATA_MIRROR", mirror.name)
    assert resolve_mirror(None) == mirror.parent / mirror.name
    assert resolve_mirror(str(Path("..") / mirror.parent.name / mirror.name)).resolve() == (
        mirror.resolve()
    )
    monkeypatch.delenv("PYROVAE_DATA_MIRROR")
    assert resolve_mirror(None) is None
    _error(resolve_mirror, "no-such-mirror", match=("no-such-mirror", "does not exist"))
    # README's command sets PYROVAE_DATA_MIRROR=../shared/data: where that does not exist (a
    # user's machine), it is passed over and torchvision downloads; data.mirror is not
    monkeypatch.setenv("PYROVAE_DATA_MIRROR", str(tmp_path / "no-such-mirror"))
    assert resolve_mirror(None) is None
    assert env_mirror_missing() == str(tmp_path / "no-such-mirror")
    cfg = load_config(None, ["data.name=fashion_mnist", f"data.root={tmp_path / 'cache'}"])
    assert "PYROVAE_DATA_MIRROR=" in data_source(cfg) and "downloaded" in data_source(cfg)
    _error(resolve_mirror, str(tmp_path / "no-such-mirror"), match=("does not exist",))
    # ... and where the data are then missing, the error names the variable passed over
    _error(load_data, "binarized_mnist", root=tmp_path / "empty", binarize="static",
           match=(f"PYROVAE_DATA_MIRROR={tmp_path / 'no-such-mirror'} does not exist",))


def test_valid_size_too_large(cache: SimpleNamespace) -> None:
    _error(load_data, "mnist", root=cache.root, valid_size=60000, match=("valid_size",))
