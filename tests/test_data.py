"""Tests of pyrovae.data on the real offline mirror (MNIST, FashionMNIST, binarized MNIST).

Tests that need the mirror fail (never skip) when it is missing.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.datasets
import torchvision.datasets.utils
from PIL import Image

from pyrovae.data import (
    BINARIZE,
    DATASETS,
    Splits,
    binarize_dynamic,
    default_root,
    load_data,
    resolve_mirror,
)
from pyrovae.errors import PyrovaeError

REPO = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("PYROVAE_DATA_MIRROR") or REPO.parent / "shared" / "data").resolve()
MNIST_FILES = [name for name, _ in torchvision.datasets.MNIST.resources]


def _error(fn, *args, match: tuple[str, ...] = (), **kwargs) -> str:
    """Call fn, expect a one-line PyrovaeError containing every string of ``match``."""
    with pytest.raises(PyrovaeError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.strip() == message and message
    for part in match:
        assert part in message, (part, message)
    return message


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``folder`` (and itself) -> (mode, size, mtime_ns)."""
    entries = [folder, *sorted(folder.rglob("*"))]
    return {
        str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_size, p.lstat().st_mtime_ns)
        for p in entries
    }


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download attempt fail fast; returns the list of URLs that were tried."""
    tried: list[str] = []

    def refuse(url, *args, **kwargs):
        tried.append(url if isinstance(url, str) else url.full_url)
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve", refuse)
    monkeypatch.delenv("PYROVAE_DATA_MIRROR", raising=False)
    return tried


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


def _is_binary(x: torch.Tensor) -> bool:
    return bool(((x == 0) | (x == 1)).all())


# --------------------------------------------------------------------------------------------
# real data: MNIST, FashionMNIST, binarized MNIST


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


# --------------------------------------------------------------------------------------------
# mirror and download failures


def test_md5_mismatch_in_mirror(tmp_path: Path, mirror: Path) -> None:
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
    raw = root / "MNIST" / "raw"
    assert not (raw / bad.name).exists()
    assert not [p for p in raw.iterdir() if p.name.startswith(".")], "temp file left behind"


def test_no_mirror_no_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tried = _no_network(monkeypatch)
    raw = tmp_path / "MNIST" / "raw"
    message = _error(
        load_data,
        "mnist",
        root=tmp_path,
        match=(str(raw), "could not be downloaded", "PYROVAE_DATA_MIRROR", *MNIST_FILES),
    )
    assert "network disabled by the test" in message
    assert tried, "torchvision should have tried (and failed) to download"
    assert not [p for p in raw.rglob("*") if p.is_file()]
    _error(
        load_data,
        "fashion_mnist",
        root=tmp_path,
        match=(str(tmp_path / "FashionMNIST" / "raw"), "FashionMNIST/raw/*.gz"),
    )
    _error(
        load_data,
        "cifar10",
        root=tmp_path,
        match=(str(tmp_path / "CIFAR10"), "cifar-10-python.tar.gz"),
    )


def test_mirror_lacking_the_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    empty = tmp_path / "empty-mirror"
    empty.mkdir()
    _error(
        load_data,
        "mnist",
        root=tmp_path / "root",
        mirror=str(empty),
        match=("has no MNIST/raw/train-images-idx3-ubyte.gz",),
    )
    _error(
        load_data,
        "binarized_mnist",
        root=tmp_path / "root",
        mirror=str(empty),
        binarize="static",
        match=(
            str(tmp_path / "root" / "binarized_mnist"),
            "binarized_mnist_train.amat.gz",
            "binarized_mnist_test.amat.gz",
            "no official download",
            "PYROVAE_DATA_MIRROR",
        ),
    )


def test_root_inside_mirror_rejected(tmp_path: Path) -> None:
    _error(load_data, "mnist", root=tmp_path / "cache", mirror=str(tmp_path), match=("mirror",))


def test_cifar10_from_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A synthetic CIFAR-10 tarball (torchvision's md5s patched to match it)."""
    _no_network(monkeypatch)
    rng = np.random.default_rng(0)
    members, train_list, test_list = {}, [], []
    batches = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in batches:
        entry = {"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), "labels": [0, 1, 2, 3]}
        members[name] = pickle.dumps(entry)
        md5 = hashlib.md5(members[name]).hexdigest()
        (test_list if name == "test_batch" else train_list).append([name, md5])
    members["batches.meta"] = pickle.dumps({"label_names": [str(i) for i in range(10)]})
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    fake = tmp_path / "mirror"
    (fake / "CIFAR10").mkdir(parents=True)
    (fake / "CIFAR10" / "cifar-10-python.tar.gz").write_bytes(buffer.getvalue())

    cls = torchvision.datasets.CIFAR10
    monkeypatch.setattr(cls, "train_list", train_list)
    monkeypatch.setattr(cls, "test_list", test_list)
    meta_md5 = hashlib.md5(members["batches.meta"]).hexdigest()
    monkeypatch.setattr(cls, "meta", {**cls.meta, "md5": meta_md5})
    # first with torchvision's real md5: the synthetic tarball is rejected by name
    _error(
        load_data,
        "cifar10",
        root=tmp_path / "root",
        mirror=str(fake),
        match=("CIFAR10/cifar-10-python.tar.gz", "md5"),
    )
    monkeypatch.setattr(cls, "tgz_md5", hashlib.md5(buffer.getvalue()).hexdigest())
    before = _snapshot(fake)
    s = load_data("cifar10", root=tmp_path / "root", mirror=str(fake), valid_size=4)
    assert _snapshot(fake) == before
    assert (len(s.train), len(s.valid), len(s.test)) == (16, 4, 4)
    assert s.x_shape == (3, 32, 32)
    grey = load_data("cifar10", root=tmp_path / "root", valid_size=4, binarize="none")
    first = pickle.loads(members["data_batch_1"])["data"]
    expected = torch.from_numpy(first.reshape(4, 3, 32, 32).astype(np.float32)) / 255
    assert torch.equal(grey.train[:4], expected)  # channels in CIFAR's own R, G, B order
    test = pickle.loads(members["test_batch"])["data"]
    assert torch.equal(grey.test, torch.from_numpy(test.reshape(4, 3, 32, 32)).float() / 255)


# --------------------------------------------------------------------------------------------
# minibatches and dynamic binarization


def _small(cache: SimpleNamespace, n: int, binarize: str = "dynamic") -> Splits:
    return dataclasses.replace(cache.mnist, train=cache.mnist.train[:n].clone(), binarize=binarize)


def test_batches_are_binary_and_sized(cache: SimpleNamespace) -> None:
    s = _small(cache, 1000)
    g = torch.Generator().manual_seed(0)
    batches = list(s.train_batches(128, g))
    assert [len(b) for b in batches] == [128] * 7 + [104]
    assert all(_is_binary(b) and b.shape[1:] == (1, 28, 28) for b in batches)
    assert [len(b) for b in s.train_batches(128, g, drop_last=True)] == [128] * 7


def test_batches_cover_train_once_per_epoch(cache: SimpleNamespace) -> None:
    s = _small(cache, 1000, binarize="none")
    epoch = torch.cat(list(s.train_batches(96, torch.Generator().manual_seed(1))))
    assert not torch.equal(epoch, s.train)  # shuffled ...
    assert sorted(r.numpy().tobytes() for r in epoch) == sorted(
        r.numpy().tobytes() for r in s.train
    )


def test_dynamic_binarization_mean_matches_grey_levels(cache: SimpleNamespace) -> None:
    """Per-pixel sums over an epoch are permutation-invariant: E = sum_i x_i, Var = sum x(1-x)."""
    s = _small(cache, 500)
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


def test_dynamic_binarization_resampled_each_epoch(cache: SimpleNamespace) -> None:
    s = _small(cache, 1)  # one image: the shuffle cannot change anything
    g = torch.Generator().manual_seed(3)
    first, second = (next(iter(s.train_batches(1, g))) for _ in range(2))
    assert _is_binary(first) and not torch.equal(first, second)


def test_same_generator_seed_same_batches(cache: SimpleNamespace) -> None:
    s = _small(cache, 300)
    a = list(s.train_batches(50, torch.Generator().manual_seed(7)))
    b = list(s.train_batches(50, torch.Generator().manual_seed(7)))
    c = list(s.train_batches(50, torch.Generator().manual_seed(8)))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_train_batches_bad_arguments(cache: SimpleNamespace) -> None:
    s = _small(cache, 10)
    g = torch.Generator()
    for bad in (0, -1, 2.5, True):
        _error(s.train_batches, bad, g, match=("batch_size",))
    _error(s.train_batches, 4, 123, match=("torch.Generator",))


def test_to_and_repr(cache: SimpleNamespace) -> None:
    s = _small(cache, 10).to("cpu")
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


# --------------------------------------------------------------------------------------------
# npy and folder


def _all_rows(s: Splits) -> torch.Tensor:
    return torch.cat([s.train, s.valid, s.test])


def test_npy_images_uint8(tmp_path: Path) -> None:
    x = np.repeat(np.arange(20, dtype=np.uint8)[:, None] * 12, 2 * 3 * 4, axis=1)
    np.save(tmp_path / "x.npy", x.reshape(20, 2, 3, 4))
    s = load_data("npy", path=str(tmp_path / "x.npy"), binarize="none")
    assert (len(s.train), len(s.valid), len(s.test)) == (16, 2, 2)
    assert s.x_shape == (2, 3, 4) and s.train.dtype == torch.float32
    values = torch.sort(_all_rows(s)[:, 0, 0, 0]).values
    assert torch.equal(values, torch.arange(20, dtype=torch.float32) * 12 / 255)


def test_npy_vectors_round_trip_and_seed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((50, 7), dtype=np.float32)
    x[:, 0] = np.arange(50) / 49
    file = tmp_path / "v.npy"
    np.save(file, x)
    s = load_data("npy", path=str(file), binarize="none", valid_size=0.2, seed=5)
    assert (len(s.train), len(s.valid), len(s.test)) == (35, 10, 5)
    assert s.x_shape == (7,)
    rows = _all_rows(s)
    assert torch.equal(rows[torch.argsort(rows[:, 0])], torch.from_numpy(x))
    same = load_data("npy", path=str(file), binarize="none", valid_size=0.2, seed=5)
    other = load_data("npy", path=str(file), binarize="none", valid_size=0.2, seed=6)
    assert torch.equal(same.test, s.test) and not torch.equal(other.test, s.test)
    limited = load_data("npy", path=str(file), binarize="none", seed=5, limit=3)
    assert len(limited.train) == 3
    dyn = load_data("npy", path=str(file))
    assert _is_binary(dyn.test) and _is_binary(dyn.valid) and not _is_binary(dyn.train)


def test_npy_rejects_bad_arrays(tmp_path: Path) -> None:
    x = np.zeros((10, 4), dtype=np.float32)
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    x[4, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    _error(load_data, "npy", path=str(tmp_path / "nan.npy"), match=("nan.npy", "3 non-finite"))
    np.save(tmp_path / "cube.npy", np.zeros((5, 4, 3)))
    _error(
        load_data,
        "npy",
        path=str(tmp_path / "cube.npy"),
        match=("(5, 4, 3)", "(N, C, H, W)", "(N, D)"),
    )
    np.save(tmp_path / "wide.npy", np.full((10, 3), 300, dtype=np.int32))
    _error(load_data, "npy", path=str(tmp_path / "wide.npy"), match=("0..255",))
    np.save(tmp_path / "big.npy", np.full((10, 3), 2.0, dtype=np.float32))
    _error(load_data, "npy", path=str(tmp_path / "big.npy"), match=("[0, 1]", "binarize=none"))
    raw = load_data("npy", path=str(tmp_path / "big.npy"), binarize="none")
    assert float(raw.train.max()) == 2.0 and "raw" in raw.test_binarization
    (tmp_path / "junk.npy").write_text("not numpy")
    _error(load_data, "npy", path=str(tmp_path / "junk.npy"), match=("junk.npy",))
    _error(load_data, "npy", path=str(tmp_path), match=("not a file",))
    np.save(tmp_path / "two.npy", np.zeros((2, 3), dtype=np.float32))
    _error(load_data, "npy", path=str(tmp_path / "two.npy"), match=("too few",))


def test_folder_of_grey_pngs(tmp_path: Path) -> None:
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(10):
        target = folder / ("sub" if i % 2 else "") / f"{i:02d}.png"
        Image.new("L", (8, 6), color=i * 20).save(target)
    (folder / "README.txt").write_text("ignored")
    (folder / ".hidden.png").write_bytes(b"not an image, and hidden")
    s = load_data("folder", path=str(folder), binarize="none")
    assert (len(s.train), len(s.valid), len(s.test)) == (8, 1, 1)
    assert s.x_shape == (1, 6, 8)
    values = torch.sort(_all_rows(s)[:, 0, 0, 0]).values
    assert torch.allclose(values, torch.arange(10, dtype=torch.float32) * 20 / 255)
    assert torch.equal(_all_rows(s), _all_rows(s)[:, :, :1, :1].expand(-1, 1, 6, 8))


def test_folder_of_rgb_images(tmp_path: Path) -> None:
    for i in range(5):
        Image.new("RGB", (4, 4), color=(255, 0, 128)).save(tmp_path / f"{i}.png")
    s = load_data("folder", path=str(tmp_path), binarize="none")
    assert s.x_shape == (3, 4, 4)
    assert torch.equal(s.train[0, :, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))


def test_folder_rejects_mixed_or_missing(tmp_path: Path) -> None:
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.new("L", (8, 6)).save(mixed / "a.png")
    Image.new("L", (8, 7)).save(mixed / "b.png")
    _error(load_data, "folder", path=str(mixed), match=("1x6x8", "1x7x8", "resize"))
    modes = tmp_path / "modes"
    modes.mkdir()
    Image.new("L", (8, 6)).save(modes / "a.png")
    Image.new("RGB", (8, 6)).save(modes / "b.png")
    _error(load_data, "folder", path=str(modes), match=("1x6x8", "3x6x8"))
    empty = tmp_path / "empty"
    empty.mkdir()
    _error(load_data, "folder", path=str(empty), match=("no images", str(empty)))
    _error(load_data, "folder", path=str(tmp_path / "nope"), match=("does not exist",))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "x.png").write_bytes(b"not a png")
    _error(load_data, "folder", path=str(broken), match=("x.png",))


# --------------------------------------------------------------------------------------------
# argument checks


def test_bad_arguments(tmp_path: Path) -> None:
    assert "mnist" in DATASETS and "dynamic" in BINARIZE
    _error(load_data, "svhn", root=tmp_path, match=("svhn", "binarized_mnist"))
    _error(load_data, "mnist", root=tmp_path, binarize="soft", match=("soft", "dynamic"))
    for bad in (0, -3, 1.5, True, "10"):
        _error(load_data, "mnist", root=tmp_path, limit=bad, match=("limit",))
    for bad in (0, -1, 1.0, 0.0, "x"):
        _error(load_data, "mnist", root=tmp_path, valid_size=bad, match=("valid_size",))
    _error(load_data, "folder", match=("data.path",))
    _error(load_data, "npy", path="", match=("data.path",))
    _error(load_data, "npy", path=str(tmp_path / "missing.npy"), match=("missing.npy",))
    _error(load_data, "mnist", root=tmp_path, path="x.npy", match=("data.path",))
    _error(load_data, "mnist", root=tmp_path, seed=1.5, match=("seed",))
    _error(load_data, "mnist", root=tmp_path, device="warp-drive", match=("warp-drive",))
    _error(load_data, "mnist", root=tmp_path, mirror=str(tmp_path / "x"), match=("mirror",))


def test_valid_size_too_large(cache: SimpleNamespace) -> None:
    _error(load_data, "mnist", root=cache.root, valid_size=60000, match=("valid_size",))


def test_default_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_root() == tmp_path / "pyrovae" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_root() == Path.home() / ".cache" / "pyrovae" / "data"


def test_binarized_mnist_plain_amat_in_root(tmp_path: Path) -> None:
    """Uncompressed .amat files already in the root, with Windows line ends: no mirror needed."""
    folder = tmp_path / "binarized_mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rows = {split: rng.integers(0, 2, (n, 784)) for split, n in [("train", 5), ("valid", 3)]}
    rows["test"] = rng.integers(0, 2, (2, 784))
    for split, r in rows.items():
        text = "\r\n".join(" ".join(str(v) for v in row) for row in r) + "\r\n"
        (folder / f"binarized_mnist_{split}.amat").write_text(text, newline="")
    s = load_data("binarized_mnist", root=tmp_path, binarize="none")
    assert (len(s.train), len(s.valid), len(s.test)) == (5, 3, 2)
    assert torch.equal(s.test.reshape(2, 784), torch.from_numpy(rows["test"]).float())
    (folder / "binarized_mnist_test.npy").unlink()
    (folder / "binarized_mnist_test.amat").write_text("0 2 1\n")
    _error(
        load_data,
        "binarized_mnist",
        root=tmp_path,
        binarize="static",
        match=("binarized_mnist_test.amat", "other than 0, 1"),
    )
