"""One contract, every registered data source: fake files that each source writes itself (as
torchvision's ``DatasetTestCase.inject_fake_data`` does), no network, no real data.

The tests run over ``pyrovae.data.SOURCES`` with no per-name branches: a new source is tested
by registering it (and declaring its fake files), with no edit here.
"""

from __future__ import annotations

import shutil
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.datasets.utils

from pyrovae.data import SOURCES, load_data
from pyrovae.data.sources import CachedSource, Fake, PathSource, TorchvisionSource
from tests.conftest import is_binary as _is_binary
from tests.conftest import one_line_error as _error

ALL = sorted(SOURCES)
CACHED = [n for n in ALL if issubclass(SOURCES[n], CachedSource)]
WITH_MD5 = [n for n in CACHED if any(md5 for _, md5 in SOURCES[n]().files())]


def _snapshot(folder: Path) -> dict[str, tuple[int, ...]] | None:
    """Every entry under ``folder`` (and itself) -> mode, and for files size and mtime_ns (a
    folder's mtime moves when a temporary file comes and goes); None if absent."""
    if not folder.exists():
        return None
    entries = [folder, *sorted(folder.rglob("*"))]
    return {str(p.relative_to(folder)): _stat(p) for p in entries}


def _stat(p: Path) -> tuple[int, ...]:
    st = p.lstat()
    return (st.st_mode,) if p.is_dir() else (st.st_mode, st.st_size, st.st_mtime_ns)


def _rows(x: torch.Tensor) -> list[bytes]:
    return [r.numpy().tobytes() for r in x.reshape(len(x), -1)]


@pytest.fixture(autouse=True)
def tried(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every download attempt fails fast (no network); the URLs that were tried."""
    urls: list[str] = []

    def refuse(url, *args, **kwargs):
        urls.append(url if isinstance(url, str) else url.full_url)
        raise urllib.error.URLError("network disabled by the test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(torchvision.datasets.utils, "_urlretrieve", refuse)
    monkeypatch.delenv("PYROVAE_DATA_MIRROR", raising=False)
    return urls


def _fake(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Fake]:
    """A mirror (or, for path sources, a folder) with fake files of ``name``; md5s patched."""
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    fake = SOURCES[name].write_fake(mirror, np.random.default_rng(0))
    for obj, attribute, value in fake.patches:
        monkeypatch.setattr(obj, attribute, value)
    return mirror, fake


def _with_other_files(root: Path, name: str) -> Path:
    """A cache root that already holds unrelated files, one in the source's own folder."""
    (root / "other").mkdir(parents=True)
    (root / "other" / "keep.txt").write_text("not ours")
    if issubclass(SOURCES[name], CachedSource):
        folder = root / SOURCES[name]().folder()
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "notes.txt").write_text("also not ours")
    return root


# --------------------------------------------------------------------------------------------
# every source


@pytest.mark.parametrize("name", ALL)
def test_loads_what_the_files_hold(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, fake = _fake(name, tmp_path, monkeypatch)
    s = load_data(name, root=tmp_path / "root", mirror=str(mirror), binarize="none", **fake.kwargs)
    assert s.name == name
    assert s.binarize == ("none" if SOURCES[name].binarized is None else "static")
    assert (len(s.train), len(s.valid), len(s.test)) == fake.sizes
    assert s.x_shape == tuple(fake.examples.shape[1:])
    for t in (s.train, s.valid, s.test):
        assert t.dtype == torch.float32 and t.device.type == "cpu" and t.is_contiguous()
        assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    everything = torch.cat([s.train, s.valid, s.test])
    if fake.ordered:
        assert torch.equal(everything, fake.examples)
    else:  # shuffled once, then split: the same examples
        assert sorted(_rows(everything)) == sorted(_rows(fake.examples))
    train, valid, test = (set(_rows(t)) for t in (s.train, s.valid, s.test))
    assert len(train) + len(valid) + len(test) == len(everything), "fake examples are distinct"
    assert not (train & valid or train & test or valid & test)
    assert "\n" not in s.test_binarization and s.test_binarization


@pytest.mark.parametrize("name", ALL)
def test_binarization_and_limit(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mirror, fake = _fake(name, tmp_path, monkeypatch)
    kwargs = dict(root=tmp_path / "root", mirror=str(mirror), **fake.kwargs)
    grey = load_data(name, binarize="none", **kwargs)
    static = load_data(name, binarize="static", **kwargs)
    assert all(_is_binary(t) for t in (static.train, static.valid, static.test))
    assert static.binarize == "static"
    again = load_data(name, binarize="static", **kwargs)
    assert torch.equal(again.train, static.train) and torch.equal(again.test, static.test)
    limited = load_data(name, binarize="none", limit=2, **kwargs)
    assert torch.equal(limited.train, grey.train[:2])
    assert torch.equal(limited.test, grey.test)
    if SOURCES[name].binarized is None:  # grey levels: dynamic keeps train grey
        dynamic = load_data(name, **kwargs)
        assert dynamic.binarize == "dynamic" and torch.equal(dynamic.train, grey.train)
        assert _is_binary(dynamic.valid) and _is_binary(dynamic.test)
        assert torch.equal(dynamic.test, static.test), "one fixed binary test set"
    else:  # binary as published: used as they are
        assert torch.equal(static.test, grey.test)
        _error(load_data, name, **kwargs, match=("binarize=static",))


# --------------------------------------------------------------------------------------------
# sources in the cache folder and mirror


@pytest.mark.parametrize("name", CACHED)
def test_mirror_copied_atomically_never_written(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tried: list[str]
) -> None:
    mirror, fake = _fake(name, tmp_path, monkeypatch)
    root = tmp_path / "root"
    before = _snapshot(mirror)
    first = load_data(name, root=root, mirror=str(mirror), binarize="none", **fake.kwargs)
    assert _snapshot(mirror) == before
    folder = SOURCES[name]().folder()
    for src in (mirror / folder).iterdir():  # the cache holds byte-identical copies, not links
        dst = root / folder / src.name
        assert not dst.is_symlink() and dst.read_bytes() == src.read_bytes()
    assert not [p for p in root.rglob(".*")], "temporary files left behind"
    # the cache alone is enough now: no mirror, no network
    again = load_data(name, root=root, binarize="none", **fake.kwargs)
    assert torch.equal(again.train, first.train) and torch.equal(again.test, first.test)
    assert not tried, "nothing was downloaded"


@pytest.mark.parametrize("name", WITH_MD5)
def test_md5_mismatch_is_one_line_and_leaves_the_cache(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, fake = _fake(name, tmp_path, monkeypatch)
    source = SOURCES[name]()
    bad_name = [n for n, md5 in source.files() if md5][-1]
    bad = mirror / source.folder() / bad_name
    data = bytearray(bad.read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    root = _with_other_files(tmp_path / "root", name)
    before = _snapshot(root)
    kwargs = dict(root=root, mirror=str(mirror), binarize="static", **fake.kwargs)
    _error(load_data, name, **kwargs, match=(str(bad), "md5"))
    assert _snapshot(root) == before


@pytest.mark.parametrize("name", CACHED)
@pytest.mark.parametrize("mirror_kind", ["none", "empty"])
@pytest.mark.parametrize("root_kind", ["new", "with_other_files"])
def test_missing_files_offline(
    name: str, mirror_kind: str, root_kind: str, tmp_path: Path, tried: list[str]
) -> None:
    """One line naming the folder and files; a failed download leaves the cache as it was (no
    empty folders, and nothing that was there before removed)."""
    mirror = None
    if mirror_kind == "empty":
        mirror = tmp_path / "empty-mirror"
        mirror.mkdir()
    root = tmp_path / "cache" / "root"
    if root_kind == "with_other_files":
        _with_other_files(root, name)
    before = _snapshot(tmp_path / "cache")
    source = SOURCES[name]()
    names = [n for n, _ in source.files()]
    _error(
        load_data,
        name,
        root=root,
        mirror=None if mirror is None else str(mirror),
        binarize="static",  # accepted by every source
        match=(str(root / source.folder()), *names, "PYROVAE_DATA_MIRROR"),
    )
    assert _snapshot(tmp_path / "cache") == before
    if isinstance(source, TorchvisionSource):  # the real download path was tried
        assert tried


@pytest.mark.parametrize("name", CACHED)
def test_interrupted_copy_leaves_no_partial_file(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, fake = _fake(name, tmp_path, monkeypatch)

    def half_then_disk_full(src, dst, *args, **kwargs):
        data = Path(src).read_bytes()
        Path(dst).write_bytes(data[: len(data) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfile", half_then_disk_full)
    root = _with_other_files(tmp_path / "root", name)
    before = _snapshot(root)
    _error(
        load_data,
        name,
        root=root,
        mirror=str(mirror),
        binarize="static",
        **fake.kwargs,
        match=(str(mirror / SOURCES[name]().folder()), "No space left"),
    )
    assert _snapshot(root) == before


@pytest.mark.parametrize("name", CACHED)
def test_damaged_cache_is_one_line_and_kept(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror, fake = _fake(name, tmp_path, monkeypatch)
    root = tmp_path / "root"
    load_data(name, root=root, mirror=str(mirror), binarize="none", **fake.kwargs)
    folder = root / SOURCES[name]().folder()
    for p in folder.rglob("*"):
        if p.is_file():
            p.write_bytes(b"\x00damaged")
    before = _snapshot(root)
    _error(load_data, name, root=root, binarize="none", **fake.kwargs, match=(str(folder),))
    assert _snapshot(root) == before, "files that were there before are the user's to delete"


# --------------------------------------------------------------------------------------------
# sources reading data.path


@pytest.mark.parametrize("name", [n for n in ALL if issubclass(SOURCES[n], PathSource)])
def test_path_sources_split_by_seed(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, fake = _fake(name, tmp_path, monkeypatch)
    a = load_data(name, binarize="none", seed=1, **fake.kwargs)
    b = load_data(name, binarize="none", seed=1, **fake.kwargs)
    c = load_data(name, binarize="none", seed=2, **fake.kwargs)
    assert torch.equal(a.test, b.test) and torch.equal(a.train, b.train)
    assert not torch.equal(a.test, c.test)
    _error(load_data, name, match=("data.path",))
