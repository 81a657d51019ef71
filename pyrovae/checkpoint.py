"""Checkpoints: atomic writes, and ``load`` for trained models.

A run folder holds ``checkpoint.pt`` (the latest epoch: model, optimizer, RNG states, config,
epoch and metrics, for ``--resume``) and ``best.pt`` (the model with the best validation ELBO).
Files are written to a temporary file in the same folder and renamed over the old one, so a
crash or ``kill -9`` at any moment leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from pyrovae.config import Config, from_dict, vae_kwargs
from pyrovae.errors import PyrovaeError
from pyrovae.files import atomic_save, atomic_write_text
from pyrovae.model import VAE

__all__ = ["atomic_save", "atomic_write_text", "build", "load", "read"]

CHECKPOINT = "checkpoint.pt"
BEST = "best.pt"


def rng_state(generator: torch.Generator) -> dict:
    """Every random state a training run draws from."""
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "batches": generator.get_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    generator.set_state(state["batches"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def read(path: str | Path) -> dict:
    """A checkpoint file, or a run folder's ``best.pt`` (else ``checkpoint.pt``), on the CPU."""
    path = Path(path)
    if path.is_dir():
        candidates = [path / BEST, path / CHECKPOINT]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            raise PyrovaeError(f"{path} holds no {BEST} or {CHECKPOINT}: pass a run folder "
                               f"written by python -m pyrovae.fit, or a checkpoint file")
        path = found
    elif not path.is_file():
        raise PyrovaeError(f"{path} does not exist: pass a run folder or a checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise PyrovaeError(f"{path} is not a readable pyrovae checkpoint ({type(err).__name__}): "
                           f"it may be truncated; use the run's other checkpoint") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise PyrovaeError(f"{path} is not a pyrovae checkpoint (no model and config in it)")
    return ckpt


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
