"""What the notebooks in ``notebooks/`` share: the fast mode, where the data are, run folders, the
kernel's settings, a plain-text table, MNIST in this mode's size with a short SVI loop (notebooks
01-03), and config runs trained by ``fit`` (notebooks 04-05). Each notebook starts with::

    from pyrovae import notebook as nb

    FAST = nb.setup()

in a code cell of its own, before any import of pyro (see the warning filter below); then,
for data and a small VAE trained by hand, ``splits = nb.load_data("mnist")`` and
``nb.train_vae(splits, steps, ...)``; for runs of the configs in ``configs/``,
``runs = nb.Runs(full_epochs=12)`` and ``runs.train("mnist.yaml", "train.beta=4")``.

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
from typing import Any, NamedTuple

# pyro imports tqdm.auto, which warns (naming its file, a machine path) in a kernel without
# ipywidgets: silenced here, on import, so that the notebook's first cell (``from pyrovae import
# notebook as nb``) comes before any import of pyro.
warnings.filterwarnings("ignore", message="IProgress not found")

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


# ---- MNIST in this mode's size, and a VAE trained by hand (notebooks 01-03) -----------------

#: Training images of :func:`load_data` when no ``limit`` is given: (fast mode, full mode).
DATA_LIMIT = (2000, 10000)


def load_data(name: str = "mnist", limit: int | None = None, binarize: str = "dynamic",
              **options: Any):
    """``pyrovae.data.load_data`` with the data folders of :func:`data_root` and
    :func:`data_mirror`; ``limit`` training examples (default: 2,000 in fast mode, 10,000 in
    full mode; the test set is always whole). ``options``: further arguments of
    ``load_data`` (``valid_size``, ``seed``, ...)."""
    from pyrovae.data import load_data as load

    if limit is None:
        limit = DATA_LIMIT[0] if fast() else DATA_LIMIT[1]
    return load(name, root=data_root(), mirror=data_mirror(), limit=limit, binarize=binarize,
                **options)


def train_vae(splits, steps: int, batch_size: int = 100, lr: float = 1e-3, seed: int = 0,
              **options: Any):
    """``steps`` Adam steps of ``pyro.infer.SVI`` on the ELBO (the loss is
    ``objectives.build("trace", vae)``) over the shuffled (and, for ``binarize="dynamic"``,
    re-binarized) training minibatches of ``splits``; ``options`` are ``VAE``'s arguments
    (``z_dim``, ``hidden``, ...). Returns the VAE in eval mode and the losses (the negative
    ELBO in nats per training example, one per step)."""
    import pyro
    import torch
    from pyro.infer import SVI

    from pyrovae import objectives
    from pyrovae.model import VAE

    pyro.set_rng_seed(seed)
    vae = VAE(x_shape=splits.x_shape, **options)
    loss = objectives.build("trace", vae)
    svi = SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": lr}), loss=loss)
    gen = torch.Generator().manual_seed(seed)
    n, losses = splits.train.shape[0], []
    while len(losses) < steps:
        for xb in splits.train_batches(batch_size, gen):
            losses.append(svi.step(xb, n) / n)
            if len(losses) == steps:
                break
    vae.eval()
    return vae, losses


# ---- config runs trained by ``fit`` (notebooks 04-05) -----------------------------------------

#: The size overrides of a fast-mode run (``PYROVAE_FAST=1``): 2,000 training and 500
#: validation images, 2 epochs, one hidden layer of 64 units, learning rate 3e-3, and the
#: ``torch`` engine (``auto`` would compile every run's step with ``torch.compile``, which costs
#: more than two epochs of a small net take).
FAST_SIZE = ("data.limit=2000", "data.valid_size=500", "train.epochs=2", "model.hidden=[64]",
             "train.lr=3e-3", "train.engine=torch")


def size(full_epochs: int, full_limit: int = 20000, full_valid: int = 5000) -> list[str]:
    """The size overrides of this mode's runs: :data:`FAST_SIZE` in fast mode; in full mode the
    first ``full_limit`` training images, ``full_valid`` further ones for validation, and
    ``full_epochs`` epochs (the configs' own networks)."""
    if fast():
        return list(FAST_SIZE)
    return [f"data.limit={full_limit}", f"data.valid_size={full_valid}",
            f"train.epochs={full_epochs}"]


def read_metrics(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's ``metrics.csv``, as floats."""
    import csv

    with open(Path(run_dir) / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


class Trained(NamedTuple):
    """A finished run: its config, its run folder and the rows of its ``metrics.csv``."""

    cfg: Any
    run_dir: Path
    rows: list[dict[str, float]]


class Runs:
    """Runs of the configs in ``configs/``, each ``configs/<name>`` + this mode's size
    (:func:`size`) + the run's own overrides, in a fresh folder under :func:`runs_dir`, on the
    CPU::

        runs = nb.Runs(full_epochs=12)
        cfg, run_dir, rows = runs.train("mnist.yaml", "train.beta=4")
    """

    def __init__(self, full_epochs: int, full_limit: int = 20000, full_valid: int = 5000,
                 size_overrides: Sequence[str] | None = None) -> None:
        self.size = (list(size_overrides) if size_overrides is not None
                     else size(full_epochs, full_limit, full_valid))

    def config(self, name: str, *overrides: str):
        """``load_config``: defaults <- ``configs/<name>`` <- size <- ``overrides``."""
        return config(name, *overrides, size=self.size)

    def train(self, name: str, *overrides: str, quiet: bool = False) -> Trained:
        """``fit`` a config; prints one line (epochs, the last test ELBO and its terms) unless
        ``quiet``. fit's own log lines name the run folder (a temporary path): not shown."""
        from pyrovae.fit import fit

        cfg = self.config(name, *overrides)
        run_dir = Path(fit(cfg, log=lambda *a: None))
        rows = read_metrics(run_dir)
        if not quiet:
            last = rows[-1]
            print(f"{name} {' '.join(overrides)}: {len(rows)} epochs; test ELBO "
                  f"{last['test_elbo']:.2f} = recon {last['recon']:.2f} - KL {last['kl']:.2f}")
        return Trained(cfg, run_dir, rows)

    @staticmethod
    def splits(cfg):
        """The data of a config's runs on the CPU (``fit.load_splits``): the same binarized
        validation and test sets as its runs."""
        import torch

        from pyrovae.fit import load_splits

        return load_splits(cfg, torch.device("cpu"))


def tile(images, nrow: int):
    """Images of shape (N, H, W) or (N, 1, H, W) (a tensor or an array) as one (rows * H,
    nrow * W) numpy array, row by row, for ``imshow``; missing tiles at the end are 0."""
    import numpy as np

    a = np.asarray(images.detach().cpu() if hasattr(images, "detach") else images, dtype=float)
    a = a.reshape(a.shape[0], *a.shape[-2:])
    rows = -(-a.shape[0] // nrow)
    a = np.concatenate([a, np.zeros((rows * nrow - a.shape[0], *a.shape[1:]))])
    return a.reshape(rows, nrow, *a.shape[1:]).transpose(0, 2, 1, 3).reshape(
        rows * a.shape[1], nrow * a.shape[2])
