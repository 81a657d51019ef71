"""What the notebooks in ``notebooks/`` share: the fast mode, where the data are, run folders, the
kernel's settings, and a plain-text table. Each notebook starts with::

    from pyrovae import notebook as nb

    FAST = nb.setup()

Data: ``PYROVAE_DATA_MIRROR`` names a read-only folder of the original dataset files when set (set
and empty: none); unset, the development setup's mirror (``../shared/data`` beside the
repository) is used where it exists. Without a mirror, torchvision downloads the data (with
internet); offline, the data cell fails with a one-line error that says which files to put where.
The cache folder is ``PYROVAE_DATA_ROOT``, else the library's default (``~/.cache/pyrovae/data``).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path

#: The repository this package lives in (an editable install), and its development data mirror.
REPO = Path(__file__).resolve().parents[1]
DEV_MIRROR = REPO.parent / "shared" / "data"
CONFIGS = REPO / "configs"


def fast() -> bool:
    """Whether the notebooks run in fast mode (``PYROVAE_FAST=1``, what CI runs): small data,
    small nets, few steps; the asserts still hold."""
    return os.environ.get("PYROVAE_FAST") == "1"


def data_mirror() -> str | None:
    """The read-only data mirror: ``PYROVAE_DATA_MIRROR`` when set (empty: None; a relative path
    that is not found from the working directory is tried from the repository root), else the
    development mirror where it exists, else None (torchvision downloads the data)."""
    value = os.environ.get("PYROVAE_DATA_MIRROR")
    if value is None:
        return str(DEV_MIRROR) if DEV_MIRROR.is_dir() else None
    if value == "":
        return None
    path = Path(value).expanduser()
    if not path.is_absolute() and not path.exists() and (REPO / path).exists():
        path = REPO / path
    return str(path)


def data_root() -> str:
    """The cache folder of the datasets: ``PYROVAE_DATA_ROOT``, else the library's default
    (``~/.cache/pyrovae/data``)."""
    from pyrovae.data import default_root

    return os.environ.get("PYROVAE_DATA_ROOT") or str(default_root())


def data_overrides() -> list[str]:
    """Config overrides for :func:`data_root` and, where there is one, :func:`data_mirror`."""
    mirror = data_mirror()
    return [f"data.root={data_root()}", *([] if mirror is None else [f"data.mirror={mirror}"])]


_RUNS: list[Path] = []


def runs_dir() -> Path:
    """A temporary folder for the notebook's run folders, removed when the kernel exits."""
    if not _RUNS:
        _RUNS.append(Path(tempfile.mkdtemp(prefix="pyrovae-notebook-runs-")))
        atexit.register(shutil.rmtree, _RUNS[0], ignore_errors=True)
    return _RUNS[0]


def config(name: str, *overrides: str, size: Sequence[str] = ()):
    """``load_config`` of ``configs/<name>`` with the data folders of :func:`data_overrides`,
    no progress bar, the CPU, the ``size`` overrides, then ``overrides``, in a fresh run folder
    under :func:`runs_dir`."""
    from pyrovae.config import load_config

    run_dir = tempfile.mkdtemp(dir=runs_dir())
    common = [*data_overrides(), "train.progress=false", "train.device=cpu"]
    return load_config(str(CONFIGS / name), [*common, *size, *overrides, f"run_dir={run_dir}"])


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line, without the file it came from (that would be a machine path)."""
    print(f"{category.__name__}: {message}", file=sys.stderr)


def setup(seed: int | None = 0, dpi: int = 80) -> bool:
    """The notebook's first code cell: warnings as one line without file paths, matplotlib inline
    at ``dpi`` with crisp pixels, ``PYROVAE_THREADS`` torch threads (default 1: small nets on a
    shared CPU), Pyro's seed; prints the mode and returns :func:`fast`."""
    import matplotlib.pyplot as plt
    import pyro
    import torch

    # pyro imports tqdm.auto, which warns (with a file path) in a kernel without ipywidgets
    warnings.filterwarnings("ignore", message="IProgress not found")
    warnings.showwarning = _one_line_warning
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        shell.run_line_magic("matplotlib", "inline")
    plt.rcParams["figure.dpi"] = dpi
    plt.rcParams["image.interpolation"] = "nearest"  # images of pixels: crisp, small PNGs
    torch.set_num_threads(int(os.environ.get("PYROVAE_THREADS", "1")))
    if seed is not None:
        pyro.set_rng_seed(seed)
    print("mode:", "FAST" if fast() else "full")
    return fast()


def print_table(header: Sequence[str], rows: Sequence[Sequence]) -> None:
    """A plain-text table: header strings, rows of values (floats printed with 2 decimals)."""
    cells = [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    print("  ".join("-" * w for w in widths))
    for r in cells:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
