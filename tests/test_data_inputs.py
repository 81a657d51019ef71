"""Argument checks of load_data, and the user's own data (``npy``, ``folder``) and hand-placed
binarized MNIST files: no real data needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pyrovae.data import BINARIZE, DATASETS, SOURCES, Splits, default_root, load_data
from tests.conftest import is_binary as _is_binary
from tests.conftest import one_line_error as _error

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


def test_runs_with_other_seeds_share_their_valid_and_test_sets(tmp_path: Path) -> None:
    """pyrovae.fit's data for folder/npy data does not depend on train.seed: a run with another
    seed is scored on the same test set, and never trains on another run's test data."""
    from pyrovae.config import load_config
    from pyrovae.fit import load_splits

    np.save(tmp_path / "v.npy", np.random.default_rng(1).random((100, 5), dtype=np.float32))

    def splits(seed: int) -> Splits:
        cfg = load_config(None, ["data.name=npy", f"data.path={tmp_path / 'v.npy'}",
                                 "data.binarize=none", f"train.seed={seed}"])
        return load_splits(cfg, torch.device("cpu"))

    a, b = splits(0), splits(1)
    assert torch.equal(a.test, b.test) and torch.equal(a.valid, b.valid)
    assert torch.equal(a.train, b.train)


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
    assert set(DATASETS) == set(SOURCES) and "dynamic" in BINARIZE
    # an unknown name: the message lists every registered one
    _error(load_data, "no_such_dataset", root=tmp_path, match=("no_such_dataset", *DATASETS))
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


def test_root_inside_mirror_rejected(tmp_path: Path) -> None:
    _error(load_data, "mnist", root=tmp_path / "cache", mirror=str(tmp_path), match=("mirror",))
    assert not (tmp_path / "cache").exists()


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
