"""pyrovae: the Variational Autoencoder as a Pyro program, with its mathematics checkable.

``VAE``, ``load`` and ``PyrovaeError`` are imported on first use, so that a light module
(``pyrovae.notebook``, ``pyrovae.errors``) can be imported without importing torch and pyro.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"
__all__ = ["VAE", "PyrovaeError", "load", "__version__"]

#: The package's names and the modules they come from.
_EXPORTS = {"VAE": "pyrovae.model", "PyrovaeError": "pyrovae.errors", "load": "pyrovae.checkpoint"}

if TYPE_CHECKING:
    from pyrovae.checkpoint import load
    from pyrovae.errors import PyrovaeError
    from pyrovae.model import VAE


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'pyrovae' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
