"""The cache folder and the read-only mirror: where dataset files are looked for and copied to.

Files are looked for in a cache folder ``root`` (default :func:`default_root`). A read-only
*mirror* (``mirror=`` or the ``PYROVAE_DATA_MIRROR`` environment variable) laid out like the
cache is copied into ``root`` (md5-checked where the source declares an md5, atomically) and
never written to. A load that fails leaves the cache as it was before it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pyrovae.data.checks import short
from pyrovae.errors import PyrovaeError
from pyrovae.files import atomic_write

MIRROR_HINT = "set data.mirror (or PYROVAE_DATA_MIRROR) to a folder holding"


def resolve_mirror(mirror: str | None) -> Path | None:
    """``mirror`` if given, else the ``PYROVAE_DATA_MIRROR`` env var, else None.

    Relative paths resolve against the current working directory. A ``data.mirror`` that does
    not exist -> PyrovaeError. A ``PYROVAE_DATA_MIRROR`` that does not exist is passed over
    (None: torchvision downloads; :func:`env_mirror_missing` says so), so that one command
    uses the mirror of a machine that has one and downloads elsewhere.
    """
    source = "data.mirror"
    if mirror is None or str(mirror) == "":
        mirror = os.environ.get("PYROVAE_DATA_MIRROR") or None
        source = "PYROVAE_DATA_MIRROR"
    if mirror is None:
        return None
    path = _absolute(mirror)
    if not path.exists() and source == "PYROVAE_DATA_MIRROR":
        return None
    if not path.exists():
        raise PyrovaeError(
            f"data mirror {path} (from {source}) does not exist: point {source} at the folder "
            "holding MNIST/raw/*.gz etc., or unset it"
        )
    if not path.is_dir():
        raise PyrovaeError(f"data mirror {path} (from {source}) is not a folder: point it at one")
    return path


def _absolute(mirror: str | Path) -> Path:
    """A mirror's path: ``~`` expanded, relative to the working directory."""
    path = Path(mirror).expanduser()
    return path if path.is_absolute() else Path.cwd() / path


def env_mirror_missing() -> str | None:
    """``PYROVAE_DATA_MIRROR`` when it is set to a path that does not exist (passed over)."""
    value = os.environ.get("PYROVAE_DATA_MIRROR") or None
    return value if value is not None and not _absolute(value).exists() else None


def env_mirror_note() -> str:
    """The note that PYROVAE_DATA_MIRROR was passed over (its folder does not exist), or an
    empty string."""
    passed = env_mirror_missing()
    return f"PYROVAE_DATA_MIRROR={passed} does not exist" if passed else ""


def mirror_hint(pattern: str) -> str:
    """The end of a missing-data error: where a mirror would help, and a PYROVAE_DATA_MIRROR
    that was passed over because its folder does not exist (a typo, most likely)."""
    note = env_mirror_note()
    return f"{MIRROR_HINT} {pattern}" + (f" ({note})" if note else "")


def default_root() -> Path:
    """The cache folder: ``$XDG_CACHE_HOME/pyrovae/data``, by default ``~/.cache/pyrovae/data``."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "pyrovae" / "data"


def cache_root(root: str | Path | None, mirror_dir: Path | None) -> Path:
    """The cache folder as an absolute path (not created); it must not lie inside the mirror."""
    path = default_root() if root is None or str(root) == "" else Path(root).expanduser()
    path = path.absolute()
    if mirror_dir is not None:
        r, m = path.resolve(), mirror_dir.resolve()
        if r == m or m in r.parents:
            raise PyrovaeError(
                f"data root {path} lies inside the read-only data mirror {mirror_dir}: "
                "choose a root outside the mirror (the mirror is only read and copied from)"
            )
    return path


def make_root(path: Path) -> Path:
    """Create the cache folder ``path``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PyrovaeError(
            f"cannot create the data root {path} ({short(e)}): set data.root to a writable folder"
        ) from None
    return path


@contextlib.contextmanager
def undo_on_failure(folder: Path) -> Iterator[None]:
    """If the block raises, remove what it created in ``folder`` (files, then emptied folders,
    then ``folder`` and its parents if the block created them), and keep what was there before:
    a failed download or copy leaves no empty or half-written folders behind."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    before = set(_tree(folder))
    try:
        yield
    except BaseException:
        new = [p for p in _tree(folder) if p not in before]
        for p in new:
            if not _is_dir(p):
                with contextlib.suppress(OSError):
                    p.unlink()
        dirs = [p for p in new if _is_dir(p)] + missing
        for p in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                p.rmdir()  # only if empty: another process may be filling it
        raise


def _tree(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*")) if _is_dir(folder) else []


def _is_dir(p: Path) -> bool:
    return p.is_dir() and not p.is_symlink()


def md5_ok(path: Path, md5: str | None) -> bool:
    """Whether ``path`` is a file with md5 ``md5`` (any file when ``md5`` is None)."""
    from torchvision.datasets.utils import check_integrity

    return check_integrity(str(path), md5)


def atomic_copy(src: Path, dst: Path, md5: str | None = None) -> None:
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

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(dst, write)
    except OSError as e:
        raise PyrovaeError(
            f"cannot copy {src} to {dst} ({short(e)}): free disk space there or set data.root "
            "to a writable folder"
        ) from None


def atomic_save_npy(array: np.ndarray, dst: Path) -> None:
    atomic_write(dst, lambda tmp: np.save(tmp, array, allow_pickle=False))
