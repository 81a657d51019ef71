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

import pickle
import random
import re
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
    """Restore the states :func:`rng_state` saved."""
    py, npy = state["python"], state["numpy"]
    torch.set_rng_state(state["torch"])
    random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
    np.random.set_state((npy["bit_generator"], np.asarray(npy["keys"], dtype=np.uint32),
                         npy["pos"], npy["has_gauss"], npy["cached_gaussian"]))
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _find(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        candidates = [path / BEST, path / CHECKPOINT]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise PyrovaeError(f"{path} holds no {BEST} or {CHECKPOINT}: pass a run folder "
                               f"written by python -m pyrovae.fit, or a checkpoint file")
        return found
    if not path.is_file():
        raise PyrovaeError(f"{path} does not exist: pass a run folder or a checkpoint file")
    return path


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


def read(path: str | Path) -> dict:
    """A checkpoint file, or a run folder's ``best.pt`` (else ``checkpoint.pt``), on the CPU,
    loaded with ``weights_only=True``: tensors and plain data only, no code run."""
    path = _find(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower():
            raise _refused(path, err) from None
        raise _unreadable(path, err) from None
    except Exception as err:
        raise _unreadable(path, err) from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PyrovaeError(f"{path} is not a pyrovae checkpoint (no model and config in it)")
    return ckpt


def _unreadable(path: Path, err: Exception) -> PyrovaeError:
    return PyrovaeError(f"{path} is not a readable pyrovae checkpoint ({type(err).__name__}): "
                        f"it may be truncated; use the run's other checkpoint")


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


def load(path: str | Path, device: str | torch.device = "cpu") -> VAE:
    """The trained VAE of a run folder (its best model) or of a checkpoint file, in eval mode.

    Example: ``vae = pyrovae.load("runs/mnist")``; then ``vae.encode(x)``, ``vae.decode(z)``.
    """
    ckpt = read(path)
    cfg = from_dict(ckpt["config"])
    vae = build(cfg, ckpt["x_shape"])
    vae.load_state_dict(ckpt["model"])
    vae.beta = 1.0
    vae.config = cfg
    return vae.to(device).eval()
