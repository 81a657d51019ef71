"""Live curves of a run in TensorBoard (``train.tensorboard=true``), through
``torch.utils.tensorboard``: the per-epoch metrics of metrics.csv as scalars and a grid of
samples from the prior, written to ``RUN_DIR/tensorboard`` (``tensorboard --logdir runs``).

TensorBoard is an optional extra: ``pip install 'pyrovae[tensorboard]'``.
"""

from __future__ import annotations

from pathlib import Path

import torch

from pyrovae.errors import PyrovaeError

#: metrics.csv columns logged as scalars, with their TensorBoard tags.
SCALARS = {"train_objective": "objective/train", "valid_elbo": "elbo/valid",
           "test_elbo": "elbo/test", "kl": "test/kl", "recon": "test/recon", "beta": "train/beta",
           "lr": "train/lr", "seconds": "train/epoch_seconds"}


def summary_writer_class():
    """torch's ``SummaryWriter``; a one-line error when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise PyrovaeError("train.tensorboard=true needs TensorBoard: pip install "
                           "'pyrovae[tensorboard]' (or set train.tensorboard=false)") from None
    return SummaryWriter


class TensorBoard:
    """Writes one run's epochs to ``run_dir/tensorboard``."""

    def __init__(self, run_dir: str | Path, samples: int = 64, seed: int = 0) -> None:
        self.writer = summary_writer_class()(log_dir=str(Path(run_dir) / "tensorboard"))
        self.samples, self.seed = samples, seed

    @torch.no_grad()
    def log_epoch(self, row: dict, vae) -> None:
        from pyrovae.plots import image_grid, prior_samples

        step = int(row["epoch"])
        for key, tag in SCALARS.items():
            if key in row:
                self.writer.add_scalar(tag, float(row[key]), step)
        was_training = vae.training
        vae.eval()
        try:
            grid = image_grid(prior_samples(vae, self.samples, self.seed), vae.x_shape)
        finally:
            vae.train(was_training)
        if grid is not None:
            self.writer.add_image("samples", grid, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
