"""TensorBoard logging (train.tensorboard=true): the scalars of metrics.csv and a sample grid per
epoch; a one-line error, before training, when TensorBoard is missing."""

from __future__ import annotations

import builtins
import csv

import pytest

from pyrovae import fit
from pyrovae.config import load_config
from pyrovae.errors import PyrovaeError

TINY = ["data.limit=300", "data.valid_size=100", "model.z_dim=2", "model.hidden=[16]",
        "train.epochs=2", "train.progress=false", "train.engine=torch", "train.tensorboard=true"]


def test_tensorboard_holds_every_epochs_metrics_and_samples(mirror, data_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = fit.fit(load_config(None, [*TINY, f"data.root={data_root}", f"run_dir={tmp_path}"]),
                  log=lambda *a: None)
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    scalars = events.Scalars("elbo/test")
    assert [e.step for e in scalars] == [1, 2]
    for event, row in zip(scalars, rows, strict=True):
        assert event.value == pytest.approx(float(row["test_elbo"]), rel=1e-6)
    assert [e.step for e in events.Images("samples")] == [1, 2]


def test_tensorboard_leaves_the_training_as_it_was(mirror, data_root, tmp_path):
    """The sample grid drawn after each epoch does not touch the training noise: with and
    without TensorBoard a run's metrics are the same numbers (their seconds aside)."""
    def numbers(tensorboard: str, name: str) -> list[dict]:
        run = fit.fit(load_config(None, [*TINY, f"data.root={data_root}", f"run_dir={tmp_path}",
                                         f"run_name={name}", f"train.tensorboard={tensorboard}"]),
                      log=lambda *a: None)
        with open(run / "metrics.csv") as f:
            return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]

    assert numbers("true", "with") == numbers("false", "without")


def test_missing_tensorboard_is_one_line_before_training(mirror, data_root, tmp_path,
                                                         monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard") or name.startswith("tensorboard"):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    cfg = load_config(None, [*TINY, f"data.root={data_root}", f"run_dir={tmp_path / 'r'}"])
    with pytest.raises(PyrovaeError, match=r"pip install 'pyrovae\[tensorboard\]'") as err:
        fit.fit(cfg, log=lambda *a: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "r").exists()  # nothing trained, nothing written
