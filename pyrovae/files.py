"""Atomic file writes: a temporary file in the target's folder, then ``os.replace`` onto it, so
a crash or ``kill -9`` at any moment leaves the old file or the new one, never half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from pyrovae.errors import PyrovaeError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix) to write; on success it replaces
    ``path`` with the usual permissions (0666 less the umask); on failure it is removed."""
    path = Path(path)
    tmp = _temp_file(path.parent, f".{path.stem}.", path.suffix,
                     f"cannot write {path}", f"make {path.parent} writable, or write elsewhere")
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _temp_file(folder: str | Path, prefix: str, suffix: str, what: str, fix: str) -> Path:
    """A new empty file in ``folder``; where none can be made, a one-line error:
    ``what (the reason): fix``."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=prefix, suffix=suffix)
    except OSError as err:
        raise PyrovaeError(f"{what} ({err.strerror or type(err).__name__}): {fix}") from None
    os.close(fd)
    return Path(name)


def check_writable(folder: str | Path, why: str) -> None:
    """A one-line error, before any work, when no file can be made in ``folder``; ``why`` says
    what would be written there and what to do."""
    _temp_file(folder, ".pyrovae-can-write.", "", f"cannot write in {folder}", why).unlink()


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """``write(tmp)`` then rename ``tmp`` onto ``path``."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def _synced(write: Callable[[Any], Any]) -> Callable[[Path], None]:
    """``write(file)`` into the temporary path, flushed to the disk before the rename, so that
    after a crash of the machine the file is the old one or the new one, never an empty one."""

    def to(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())

    return to


def atomic_save(obj: Any, path: str | Path) -> Path:
    """``torch.save`` with fsync, atomically."""
    return atomic_write(path, _synced(lambda f: torch.save(obj, f)))


def atomic_write_text(text: str, path: str | Path) -> Path:
    """``text`` (UTF-8) with fsync, atomically."""
    return atomic_write(path, _synced(lambda f: f.write(text.encode("utf-8"))))
