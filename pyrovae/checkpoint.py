"""Checkpoints: atomic writes, and ``load`` for trained models.

A run folder holds ``checkpoint.pt`` (the latest epoch: model, optimizer, RNG states, config,
epoch and metrics, for ``--resume``) and ``best.pt`` (the model with the best validation ELBO).
Files are written to a temporary file in the same folder and renamed over the old one, so a
crash or ``kill -9`` at any moment leaves either the old or the new file, never half of one.

Reading a checkpoint runs no code: :func:`read` uses ``torch.load(weights_only=True)``, which
unpickles only tensors and plain data (dicts, lists, tuples, strings, numbers), so a file from
someone else cannot execute anything. Everything saved is plain data: the config as a dict,
the RNG states as tensors and lists of ints (:func:`rng_state`). Checkpoints of older pyrovae
versions held numpy's RNG state as a numpy array and are refused with a one-line error; a
trusted one can be rewritten with :func:`convert`.
"""

from __future__ import annotations

import hashlib
import pickle
import random
import re
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pyrovae.config import Config, from_dict, vae_kwargs
from pyrovae.errors import PyrovaeError
from pyrovae.files import atomic_save, atomic_write_text
from pyrovae.model import VAE

__all__ = ["atomic_save", "atomic_write_text", "build", "convert", "load", "read"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"
#: The run's effective config, written when its folder is made.
CONFIG = "config.yaml"
#: In a ``run_dir`` (the folder of a config's runs): a text file naming its latest run folder.
LATEST = "latest"


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a training run draws from, as tensors and plain Python data (what
    ``torch.load(weights_only=True)`` reads back): torch's and the batch generator's states as
    byte tensors, Python's and numpy's Mersenne Twisters as lists of ints."""
    version, internal, gauss_next = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state = {
        "torch": torch.get_rng_state(),
        "python": {"version": int(version), "state": [int(v) for v in internal],
                   "gauss_next": gauss_next},
        "numpy": {"bit_generator": str(kind), "keys": [int(v) for v in keys], "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "batches": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    """Restore the states :func:`rng_state` saved. A batch generator saved on another device
    type (a CUDA generator's state is 16 bytes, a CPU one's 5,056) cannot take the saved state:
    it is seeded from it instead, so a run moved between a GPU and a CPU goes on, with another
    stream; the CUDA states are restored for the GPUs there are."""
    py, npy = state["python"], state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state((npy["bit_generator"], np.asarray(npy["keys"], dtype=np.uint32),
                         npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    batches = state["batches"]
    if batches.numel() == generator.get_state().numel():
        generator.set_state(batches)
    else:
        digest = hashlib.sha256(batches.cpu().numpy().tobytes()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "little"))
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, device=index)


def holds_run(folder: Path) -> bool:
    """Whether ``folder`` is a run folder (it holds ``best.pt`` or ``checkpoint.pt``)."""
    return (folder / BEST).is_file() or (folder / CHECKPOINT).is_file()


def version_number(folder: Path) -> int:
    """N of a folder named ``version_N``; -1 for any other name."""
    match = re.fullmatch(r"version_(\d+)", folder.name)
    return int(match.group(1)) if match else -1


def versions(parent: Path) -> list[Path]:
    """The run folders directly inside ``parent``, oldest first: ``version_N`` by N, then other
    names by the time of their latest checkpoint."""
    if not parent.is_dir():
        return []
    runs = [p for p in parent.iterdir() if p.is_dir() and holds_run(p)]

    def when(p: Path) -> float:
        return max((p / f).stat().st_mtime for f in (BEST, CHECKPOINT) if (p / f).is_file())

    return sorted(runs, key=lambda p: (version_number(p) >= 0, version_number(p), when(p)))


def is_latest_file(latest: Path) -> bool:
    """Whether ``latest`` is what :func:`write_latest` writes: a small text file of one line
    naming a folder beside it (or a ``version_N`` folder since removed)."""
    if not latest.is_file() or latest.stat().st_size > 4096:
        return False
    try:
        lines = latest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return False
    if len(lines) != 1 or lines[0] in ("", ".", "..") or "/" in lines[0]:
        return False
    return (latest.parent / lines[0]).is_dir() or version_number(Path(lines[0])) >= 0


def write_latest(parent: Path, run: Path) -> None:
    """Point ``parent/latest`` (a text file holding the run folder's name) at ``run``,
    atomically."""
    atomic_write_text(run.name + "\n", parent / LATEST)


def resolve_run(path: str | Path) -> tuple[Path, str | None]:
    """The run folder (or checkpoint file) that ``path`` names, and a note when it was picked
    from a parent folder: ``path`` itself when it is a checkpoint file or a run folder; else
    the run that ``path/latest`` names; else its highest ``version_N`` (or newest run)."""
    path = Path(path)
    if path.is_file():
        return path, None
    if not path.exists():
        raise PyrovaeError(f"{path} does not exist: pass a run folder written by python -m "
                           "pyrovae.fit, the folder above it (run_dir), or a checkpoint file")
    if not path.is_dir():
        raise PyrovaeError(f"{path} is not a folder or a file: pass a run folder, the folder "
                           "above it (run_dir), or a checkpoint file")
    if holds_run(path):
        return path, None
    latest = path / LATEST
    if latest.is_file():
        name = latest.read_text().strip()
        chosen = path / name
        if name and "/" not in name and name not in (".", "..") and holds_run(chosen):
            return chosen, f"the latest run in {path} (named in {latest})"
    runs = versions(path)
    if runs:
        return runs[-1], f"the latest of the {len(runs)} runs in {path}"
    raise PyrovaeError(f"{path} holds no run ({BEST} or {CHECKPOINT}) and no run folders: pass "
                       "a run folder written by python -m pyrovae.fit (such as "
                       f"{path / 'version_0'}), the folder above it, or a checkpoint file")


def _find(path: str | Path, log: Callable[[str], None] | None = None) -> Path:
    """The checkpoint file ``path`` names: the file itself, or a run folder's ``best.pt``
    (else ``checkpoint.pt``), the run picked by :func:`resolve_run` (``log`` says which)."""
    found, note = resolve_run(path)
    if found.is_dir():
        found = next(p for p in (found / BEST, found / CHECKPOINT) if p.is_file())
    if note is not None and log is not None:
        log(f"pyrovae: using {found}, {note}")
    return found


def _refused(path: Path, err: Exception) -> PyrovaeError:
    """The one-line error for a file that ``weights_only`` loading refuses."""
    found = re.search(r"GLOBAL ([\w.]+)", str(err), re.IGNORECASE)
    what = f"it needs {found.group(1)}" if found else "it holds objects other than plain data"
    return PyrovaeError(
        f"{path} is not a plain-data checkpoint ({what}): pyrovae reads checkpoints with "
        f"torch.load(weights_only=True), which runs no code from the file. If an older pyrovae "
        f"wrote it (numpy RNG states), re-create it by training again, or, only if you trust "
        f"where it came from, convert it with pyrovae.checkpoint.convert('{path}')"
    )


def read(path: str | Path, log: Callable[[str], None] | None = None) -> dict:
    """A checkpoint file, or a run folder's ``best.pt`` (else ``checkpoint.pt``), on the CPU,
    loaded with ``weights_only=True``: tensors and plain data only, no code run. ``path`` may
    also be the folder above the runs (a config's ``run_dir``): its latest run is read, and
    ``log`` says which."""
    path = _find(path, log)
    try:
        with warnings.catch_warnings():  # torch's note on legacy pickle files: the error says it
            warnings.filterwarnings("ignore", message=".*pickle protocol", category=UserWarning)
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if re.search(r"GLOBAL [\w.]+", str(err), re.IGNORECASE):  # objects, not damage
            raise _refused(path, err) from None
        raise _unreadable(path, err) from None
    except Exception as err:
        raise _unreadable(path, err) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PyrovaeError(f"{path} is not a pyrovae checkpoint (no model and config in it)")
    return ckpt


def _unreadable(path: Path, err: Exception) -> PyrovaeError:
    return PyrovaeError(f"{path} is not a readable pyrovae checkpoint ({type(err).__name__}): "
                        f"it may be truncated or damaged, or not written by torch.save; use the "
                        f"run's other checkpoint")


def convert(path: str | Path, out: str | Path | None = None) -> Path:
    """Rewrite a checkpoint of an older pyrovae (numpy RNG states) as plain data that
    :func:`read` accepts, atomically, over ``path`` unless ``out`` is given; returns the path.

    This UNPICKLES THE FILE WITH ``weights_only=False``: it can run any code the file holds.
    Use it only on files you wrote yourself or otherwise trust."""
    path = _find(path)
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PyrovaeError(f"{path} is not a pyrovae checkpoint (no model and config in it)")
    rng = ckpt.get("rng")
    if isinstance(rng, dict) and isinstance(rng.get("numpy"), tuple):
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        rng["numpy"] = {"bit_generator": str(kind), "keys": [int(v) for v in keys],
                        "pos": int(pos), "has_gauss": int(has_gauss),
                        "cached_gaussian": float(cached)}
    if isinstance(rng, dict) and isinstance(rng.get("python"), tuple):
        version, internal, gauss_next = rng["python"]
        rng["python"] = {"version": int(version), "state": [int(v) for v in internal],
                         "gauss_next": gauss_next}
    return atomic_save(ckpt, path if out is None else out)


def build(cfg: Config, x_shape) -> VAE:
    return VAE(**vae_kwargs(cfg, x_shape))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load(path: str | Path, device: str | torch.device = "cpu",
         log: Callable[[str], None] | None = _stderr) -> VAE:
    """The trained VAE of a run folder (its best model) or of a checkpoint file, in eval mode.
    ``path`` may be the folder above the runs (a config's ``run_dir``, e.g. ``runs/mnist``):
    then its latest run is loaded and ``log`` (stderr by default; None: silent) says which.

    Example: ``vae = pyrovae.load("runs/mnist")``; then ``vae.encode(x)``, ``vae.decode(z)``.
    """
    if not isinstance(path, (str, Path)):
        raise PyrovaeError(f"pyrovae.load takes a run folder or checkpoint file path, got "
                           f"{type(path).__name__}")
    if not isinstance(device, torch.device):
        try:
            device = torch.device(device)
        except (RuntimeError, TypeError):
            raise PyrovaeError(f"bad device {device!r}: use cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PyrovaeError(f"device {str(device)!r} but no CUDA GPU is available: use cpu")
    ckpt = read(path, log)
    cfg = from_dict(ckpt["config"])
    vae = build_trained(cfg, ckpt, path)
    vae.config = cfg
    return vae.to(device).eval()


#: What ``--resume`` reads from a ``checkpoint.pt`` besides the model and config, by type.
RESUMED = {"optim": dict, "rng": dict, "metrics": list, "epoch": int, "step": int,
           "best_valid": (int, float)}
RNG_STATES = ("torch", "python", "numpy", "batches")


def check_resumable(ckpt: dict, path: str | Path) -> None:
    """A one-line error unless ``ckpt`` holds what a resumed run needs (an edited or damaged
    ``checkpoint.pt``, or a ``best.pt``, which keeps no optimizer or random state)."""
    for key, kind in RESUMED.items():
        value = ckpt.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            raise PyrovaeError(f"{path} cannot be resumed: its {key!r} is missing or not a "
                               f"{getattr(kind, '__name__', 'number')}; the file is damaged "
                               f"or is not a {CHECKPOINT}")
    missing = [k for k in RNG_STATES if k not in ckpt["rng"]]
    if missing or ckpt["epoch"] < 0 or ckpt["step"] < 0:
        raise PyrovaeError(f"{path} cannot be resumed: its random states or epoch count are "
                           "damaged; start a new run from its best.pt weights instead")


def build_trained(cfg: Config, ckpt: dict, path: str | Path) -> VAE:
    """The VAE of ``cfg`` with the weights of ``ckpt``; a checkpoint whose weights or example
    shape do not fit its config (edited, or damaged) is a one-line error."""
    shape = ckpt.get("x_shape")
    if not isinstance(shape, (list, tuple)) or not shape \
            or not all(isinstance(n, int) and n > 0 for n in shape):
        raise PyrovaeError(f"{path}: its example shape x_shape={shape!r} is missing or not a "
                           "list of positive sizes; the file is damaged, use the run's other "
                           "checkpoint")
    try:
        vae = build(cfg, shape)
        vae.load_state_dict(ckpt["model"])
    except PyrovaeError as err:
        raise PyrovaeError(f"{path}: {err}") from None
    except (RuntimeError, TypeError, KeyError, ValueError, AttributeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise PyrovaeError(f"{path}: its weights do not fit its config ({first}); the file was "
                           "edited or is damaged, use the run's other checkpoint") from None
    return vae
